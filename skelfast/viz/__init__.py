"""Pictures of runs and data: ``curves`` (training curves of a run folder), ``embedding`` (2-D PCA of
features), ``skeleton_plot`` (3-D stick figures, augmented views, GIFs); ``cli`` wires ``skelfast plot``
and ``skelfast show``. Nothing is imported here so ``skelfast --help`` stays quick."""
