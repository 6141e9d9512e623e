"""Simulated days at the desk, through the real desk core with a fake clock: how well the
wait estimate, the predictive alert and the staffing forecast do (``chatd simulate``,
docs/waits.md#the-simulator)."""
