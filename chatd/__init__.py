"""chatd: live chat for software vendors' technical support desks."""

__version__ = "0.1.0"
