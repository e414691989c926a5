"""`nas-kws sweep`: an Optuna study whose trial is one lab pipeline (search -> retrain ->
optional QAT), each step the ordinary `nas-kws` command in its own run directory."""
