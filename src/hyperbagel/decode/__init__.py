"""Autoregressive decoding: plain decoding, and speculative decoding with a draft model (chain and tree)."""
