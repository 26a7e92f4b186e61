"""`hicra-analyze`: figures, a token-advantage viewer and a report for finished MLflow runs (paper section 4)."""
