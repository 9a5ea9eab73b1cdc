"""Fleet physics, failure modes, the vectorised generator and the SimPy what-if engine."""
