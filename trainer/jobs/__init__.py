"""Training jobs behind TrainService: validated specs, child processes, folders that survive.

    spec.py       StartJob spec -> JobPlan, every bad field at once (SpecError)
    store.py      the jobs root on disk: one folder per job, atomic writes, a lock per root
    runner.py     a job's process: command line, start, identity, what its end means
    child.py      the job's top process: tied to the server, download, then gpt-train
    events.py     reading events.jsonl and output.log while they grow
    manager.py    JobManager: queue, bounded concurrency, supervision, restart recovery
    reporting.py  jobs by state and running jobs' progress, for metrics
    watch.py      one WatchJob stream: snapshot, then live events
    views.py      jobs and events as nanollm.v1 messages

Guide: docs/train_service.md.
"""
