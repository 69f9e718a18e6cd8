"""The front half every API family shares: its request, described in neutral terms, becomes EngineRequests.

A family's route parses its own body, fills the neutral descriptions here (SamplingFields, Conversation) and
gets back validated engine parameters; the checks, defaults and their messages live here once.
"""
