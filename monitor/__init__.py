"""telesafe: the supervisory safety and compliance monitor for remote robot-assisted surgery."""

__version__ = "0.1.0"
