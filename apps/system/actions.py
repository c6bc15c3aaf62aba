"""What every app's buttons do after a POST: call the service for the person who pressed it; a refusal the service
raises (its own error class: not yours, already finished, still running) becomes an error message on the page the
view goes back to, so the person reads why and nothing changed. Any other exception is a bug and stays one."""

from django.contrib import messages


def user_action(request, service, /, *, refused: type[Exception] | tuple[type[Exception], ...], **kwargs) -> bool:
    """service(user=request.user, **kwargs); True when it was done, False when it was refused (the reason is a
    message)."""
    try:
        service(user=request.user, **kwargs)
    except refused as exc:
        messages.error(request, str(exc))
        return False
    return True
