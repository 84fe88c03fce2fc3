"""Learning from outcomes: labels from the ledger, shadow runs, re-calibration, drift."""
