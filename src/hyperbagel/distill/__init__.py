"""Generation distillation (Hyper-Bagel §3.2): pure loss functions per stage (``cfg``, ``tscd``, ``dmdo``, ``adp``,
``refl``), the discriminators and the reward model. The training loops live in ``recipes/``, the ``hyperbagel
distill`` commands in ``commands/distill.py``."""
