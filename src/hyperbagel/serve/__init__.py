"""The web demo (``hyperbagel serve``): BAGEL's three tabs over the public ``Pipeline``."""
