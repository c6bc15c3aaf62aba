"""Device profiles: how fast each kind of train worker's device is, a system concern shared by every app that
estimates a job's time (training today; fine-tuning and sweeps next). A worker records its device's peak FLOP/s when
it starts and the MFU its runs reach; the submit forms' estimates read them back.

The rows are training.DeviceProfile (the table stays where its migration made it).
"""

from apps.training.models import DeviceProfile


def device_profile_record(*, device: dict, peak_flops: float | None = None, mfu: float | None = None) -> None:
    """Remember how fast a kind of device is: its peak (when a worker starts) and the MFU a run reached on it."""
    key = device_key(device)
    profile, _ = DeviceProfile.objects.get_or_create(
        key=key, defaults={"kind": device.get("kind", "?"), "name": device.get("name", "?")[:200]})
    if peak_flops:
        # the peak is the best ever measured: a measurement on a busy machine comes out low, never high
        profile.peak_flops = max(profile.peak_flops or 0.0, peak_flops)
    if mfu is not None and 0 < mfu <= 1:  # above 1 means the peak was measured too low: not a figure to keep
        # a running mean that favours recent runs: one odd run (a tiny model, a busy machine) moves it only a bit
        profile.mfu = mfu if profile.mfu is None else 0.7 * profile.mfu + 0.3 * mfu
        profile.runs += 1
    profile.save()


def device_peak_flops(*, device: dict) -> float | None:
    """The best peak FLOP/s measured for this kind of device so far, if any."""
    profile = DeviceProfile.objects.filter(key=device_key(device)).first()
    return profile.peak_flops if profile is not None else None


def device_key(device: dict) -> str:
    kind = device.get("kind", "?")
    if kind == "cpu":
        return f"cpu|{device.get('name', '?')}|{device.get('cores', '?')} cores"[:200]
    return f"{kind}|{device.get('name', '?')}"[:200]


def describe_device(device: dict) -> str:
    if not device:
        return "unknown device"
    kind = str(device.get("kind", "?")).upper()
    if device.get("kind") == "cpu":
        return f"CPU {device.get('name', '')}, {device.get('cores', '?')} cores"
    return f"{kind} {device.get('name', '')}"
