"""Experiments of Rueckert et al. (Humanoids 2017), regenerated: each module measures its figures
and tables from scratch (only the paper's own numbers are constants, labelled as such).

* :mod:`.synthetic`: Table I (one-step prediction on the synthetic 1-D set, naive / GP / LSTM)
  and Fig. 5 (sequential vs permuted training data).
* :mod:`.lwr_sizes`: Fig. 6 / Table II (MSE and wall time vs training-set size, simulated LWR)
  and Fig. 8 (two reaching motions); :mod:`.baxter`: the same comparison on the real Baxter set.
* :mod:`.paper`: ``invdyn experiment paper``, all of the above in one report.
* :mod:`.tune` / :mod:`.hparams`: ``invdyn tune``, the search behind the LSTM hyperparameters
  (``config/paper_hparams.yaml``); :mod:`.common`: the shared model and scoring paths.
"""
