"""What-if fleet simulation with SimPy: scenarios x maintenance policies -> KPIs with confidence intervals.

Modules: ``plans`` (fleet from the generator), ``model`` (the SimPy fleet, chargers and workshop),
``policies`` (reactive, scheduled, predictive), ``detectors`` (what the predictive policy listens to),
``twin_detector`` (generator frames through the twin host, ``twins.host``/``twins.hosting``, and trained models),
``kpis``, ``scenarios`` (configs/scenarios/*.json),
``runner`` (one replication, pure), ``parallel`` (replications as Ray tasks), ``report``, ``commands``
(``evtwin simulate``).
"""
