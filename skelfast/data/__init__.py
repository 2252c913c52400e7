"""Skeleton data: NTU RGB+D raw reader and converter, PKU-MMD, pyskl pickles, the official
normalisations, datasets over memory-mapped arrays, and the synthetic default dataset."""
