"""finpulse: real-time financial opinion monitoring."""

__version__ = "0.1.0"
