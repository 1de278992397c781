import json

from moelab.config import RunConfig
from moelab.sweeps import Store


def test_status_transitions_and_recovery(tmp_path):
    store = Store(tmp_path)
    cfg = RunConfig()
    for key in ("a", "b", "c", "d"):
        store.add(key, key, cfg)
    store.add("a", "again", cfg)  # known runs are not reset
    for key in ("a", "b", "c", "d"):
        store.mark_running(key)
    store.mark_done("a", {"bits": 1.0})
    store.mark_failed("b", "loss became nan")
    # c finished its folder just before the driver died; d was interrupted mid-run
    (store.run_dir("c")).mkdir(parents=True)
    (store.run_dir("c") / "metrics.json").write_text(json.dumps({"bits": 3.0}))

    store.recover(["a", "b", "c", "d"], retry_failed=False)
    assert store.statuses() == {"a": "done", "b": "failed", "c": "done", "d": "pending"}
    rows = {r["key"]: r for r in store.rows()}
    assert rows["c"]["metrics"] == {"bits": 3.0} and rows["b"]["reason"] == "loss became nan"
    assert rows["a"]["label"] == "a" and rows["a"]["config"]["model"]["d_model"] == cfg.model.d_model

    store.recover(["b"], retry_failed=True)
    assert store.statuses(["b"]) == {"b": "pending"}
    store.close()
    assert Store(tmp_path).statuses()["a"] == "done"  # persisted
