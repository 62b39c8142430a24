"""``dupstream eval``: the paper's evaluation, rebuilt on real images that ship in packages.

Modules, one job each: ``sources`` (where packaged images live), ``dataset`` (the common data-set
shape and the source-level split), ``mnist`` / ``coco`` / ``cctv`` / ``userpairs`` (builders),
``signals`` (per-image features and the per-pair signal table, computed once), ``methods``
(baselines and ablations as functions of that table), ``metrics``, ``stats``, ``scalability``,
``plots`` / ``report`` (Markdown + HTML), ``runner`` (the command).
"""
