from config.celery import app
from workers import tasks


def test_training_tasks_go_to_train_and_everything_else_to_infer():
    router = app.amqp.router
    assert router.route({}, "workers.tasks.run_train")["queue"].name == "train"
    assert router.route({}, "workers.tasks.tokenizer_train")["queue"].name == "infer"


def test_training_tasks_survive_a_killed_worker_and_workers_take_one_job_at_a_time():
    assert tasks.TRAIN_TASK_OPTIONS == {"acks_late": True, "reject_on_worker_lost": True}
    assert app.conf.worker_prefetch_multiplier == 1
