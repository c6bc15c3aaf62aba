from channels.db import database_sync_to_async
from django.template.loader import render_to_string

from apps.evals import realtime, selectors
from apps.evals.models import Evaluation
from apps.registry.models import Model
from apps.system.consumers import LabConsumer


class _EvalsConsumer(LabConsumer):
    """Sends each event as an htmx out-of-band fragment. Only someone who may see the model joins (a published
    model's evaluations are everyone's to watch); on connect the jobs still under way are sent, so a page opened
    mid-job shows where it is now."""

    template = ""

    async def connect(self):
        found = await database_sync_to_async(self._authorize)()
        if found is None:
            await self.close(code=4404)
            return
        self.group, active = found
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        for view in active:
            await self.send_fragment(view)

    def _authorize(self):
        raise NotImplementedError

    async def evals_progress(self, event):
        await self.send_fragment(event["evaluation"])

    async def evals_state(self, event):
        await self.send_fragment(event["evaluation"])

    async def send_fragment(self, view: dict):
        user = self.scope.get("user")
        context = {"e": view, "oob": True, "user_id": getattr(user, "id", None),
                   "is_staff": getattr(user, "is_staff", False)}
        await self.send(text_data=render_to_string(self.template, context))


class ModelEvalsConsumer(_EvalsConsumer):
    """ws/evals/model/<model_id>/: every evaluation of a model, each a row of its Evaluations table."""

    template = "evals/_evaluation-row.html"

    def _authorize(self):
        model_id = int(self.scope["url_route"]["kwargs"]["model_id"])
        model = Model.objects.visible_to(self.scope.get("user")).filter(pk=model_id).first()
        if model is None:
            return None
        active = Evaluation.objects.filter(model=model, status__in=Evaluation.ACTIVE)
        return realtime.model_group(model_id), [selectors.evaluation_view(e) for e in active]


class EvaluationConsumer(_EvalsConsumer):
    """ws/evals/evaluation/<evaluation_id>/: one evaluation's status block on its own page."""

    template = "evals/_evaluation-status.html"

    def _authorize(self):
        evaluation_id = int(self.scope["url_route"]["kwargs"]["evaluation_id"])
        e = selectors.evaluation_list(user=self.scope.get("user")).filter(pk=evaluation_id).first()
        if e is None:
            return None
        return realtime.evaluation_group(evaluation_id), [selectors.evaluation_view(e)]
