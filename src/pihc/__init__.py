"""pihc: physics-informed hard constraints with mixture-of-experts."""
__version__ = "0.1.0"
