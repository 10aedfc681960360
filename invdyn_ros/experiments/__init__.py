"""Experiments of Rueckert et al. (Humanoids 2017), regenerated: each module measures its figures
and tables from scratch (only the paper's own numbers are constants, labelled as such).

* :mod:`.synthetic`: Table I (one-step prediction on the synthetic 1-D set, naive / GP / LSTM)
  and Fig. 5 (sequential vs permuted training data).
"""
