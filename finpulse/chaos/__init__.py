"""The fault suite (``finpulse chaos``): each fault against the real embedded stack, and what became of every
event Kafka accepted. ``runner.run_scenarios`` runs them; ``accounting`` is the one place that counts.
"""
