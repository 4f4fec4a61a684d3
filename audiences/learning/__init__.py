"""Targeting that learns: response, churn, best channel and uplift models, next best offer.

- ``dataset``: training rows from the ledger, events and orders, features AS THEY WERE at send time;
- ``models``: scikit-learn pipelines, training with a time-based holdout and metric floors;
- ``metrics``: AUC, Brier, reliability, Qini and uplift at k %;
- ``registry``: versioned models on disk (joblib + JSON metadata), selection and pinning;
- ``scoring``: batch scores into ``customer_score`` (so that selection stays one SQL query);
- ``choose``: the ``best`` channel strategy for audiences.selection;
- ``recommend``: item-to-item co-purchase recommendations into ``recommendation``;
- ``hillstrom``: adapter loading the public Hillstrom e-mail experiment as a past campaign run.

Heavy imports (sklearn, pandas) happen inside functions so that ``relance --help`` stays fast.
"""
