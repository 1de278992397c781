"""Executors for driver tests: every submitted run settles at once, without a worker."""

from concurrent.futures import Future


class InstantExecutor:
    """Settles each run with `outcome(cfg, out_dir)`: ('done', metrics) or an exception to raise.
    Records the configs in the order they were submitted."""

    def __init__(self, outcome, capacity: int = 1):
        self.outcome, self.capacity = outcome, capacity
        self.submitted, self.resets = [], 0

    def submit(self, cfg, out_dir):
        self.submitted.append(cfg)
        future, result = Future(), self.outcome(cfg, out_dir)
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
        return future

    def reset(self):
        self.resets += 1

    def close(self, kill=False):
        pass
