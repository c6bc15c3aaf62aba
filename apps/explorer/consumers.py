from channels.db import database_sync_to_async
from django.template.loader import render_to_string

from apps.explorer import realtime, selectors
from apps.explorer.models import Trace
from apps.explorer.selectors import ExplorerError
from apps.system.consumers import LabConsumer

NOT_FOUND = 4404  # close code: no such trace, or its model is not the user's


class TraceConsumer(LabConsumer):
    """ws/explorer/traces/<key>/: tells a page how its trace is doing, as the #trace-status fragment (htmx swaps it
    out of band), until the trace is ready or failed; then it closes.

    A trace's key is unguessable, and the model behind it must be one the user may see, so joining the group needs
    both. The socket only sends: a message from the page gets a notice and changes nothing."""

    async def connect(self):
        self.key = self.scope["url_route"]["kwargs"]["key"]
        trace = await database_sync_to_async(self._visible_trace)()
        if trace is None:
            await self.close(code=NOT_FOUND)
            return
        self.group = realtime.trace_group(self.key)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_status()  # the state now: the event that made it so may have come before we joined

    async def receive(self, text_data=None, bytes_data=None):
        notice = "This socket only sends a trace's progress; messages to it are ignored."
        await self.send(text_data=render_to_string("explorer/_explorer-notice.html", {"message": notice}))

    async def rejoined(self):
        await self.send_status()  # the trace may have finished while Redis was away

    async def explorer_status(self, event):
        await self.send_status(phase=event.get("phase", ""))

    async def send_status(self, phase: str = ""):
        trace = await database_sync_to_async(selectors.trace_get)(key=self.key)
        if trace is None:
            await self.close(code=NOT_FOUND)
            return
        view = selectors.trace_view(trace) | {"phase": phase}
        await self.send(text_data=render_to_string("explorer/_trace-status.html", {"trace": view, "oob": True}))
        if not trace.pending:
            await self.close()  # 1000: the ws extension does not reconnect after a normal close

    def _visible_trace(self) -> Trace | None:
        trace = selectors.trace_get(key=self.key)
        if trace is None:
            return None
        try:
            selectors.source_get(ref=trace.source, user=self.scope.get("user"))
        except ExplorerError:
            return None
        return trace
