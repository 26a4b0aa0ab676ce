"""Generation distillation (Hyper-Bagel §3.2): pure loss functions per stage (``cfg``, ``tscd``, ``dmdo``), the
latent discriminator, and the ``hyperbagel distill`` commands. The training loops live in ``recipes/``."""
