"""NeuMap: a scene as a grid of latent codes, decoded to scene coordinates by a scene-agnostic transdecoder."""
