"""hyperbagel: Hyper-Bagel acceleration for unified multimodal models.

Speculative decoding for understanding and few-step distillation for generation and editing, with Shapes World as
an embedded, exactly judged test bed.
"""

__version__ = "0.1.0"
