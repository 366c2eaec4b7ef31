"""layerkit: small, well-layered container images and a self-organising cluster."""

__version__ = "0.1.0"
