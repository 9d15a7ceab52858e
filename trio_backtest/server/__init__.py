"""The local backtest server: embedded default, test peer and fault lab."""
