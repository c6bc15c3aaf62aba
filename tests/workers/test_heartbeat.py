from workers.heartbeat import Heartbeat


def test_heartbeat_carries_the_tasks_running_now():
    beat = Heartbeat(name="train@x", queues=["train"], pool="solo", concurrency=1)
    beat.device = {"kind": "cpu"}
    beat.task_started("abc", "workers.tasks.run_train")
    status = beat.status()
    assert [t["name"] for t in status["tasks"]] == ["run_train"]
    assert status["name"] == "train@x" and status["queues"] == ["train"]
    assert beat.wake.is_set(), "a task starting sends a beat at once instead of waiting for the next tick"
    beat.task_finished("abc")
    assert beat.status()["tasks"] == []
