"""The BAGEL architecture: MoT language model, SigLIP ViT, FLUX autoencoder, the unified model, configs, checkpoints."""
