"""The glue between a fine-tuning Run row (kind "sft") and the same training loop and job machinery as pretraining.

FinetuneJob is a TrainingJob (workers/training.py): the same lease, Supervisor and Recorder threads, cancel, resume
from the last checkpoint, time limit and dashboard events. What differs is only what goes into train():

    model     the base registry model's weights (checkpoint.load_model), its embedding grown by ChatML's two tokens
              when it had no chat template (sft.grow_embeddings: new rows start at the mean of the old ones), and
              LoRA adapters injected when asked (sft.apply_lora: only the adapters train)
    batch_fn  sft.ConversationBatches over the run's conversation set: padded rows of whole conversations, targets
              only on the assistant's tokens, conversations longer than the context cropped from the left (counted
              in the run's timeline)

At every evaluation the sample is the model's greedy answers to three fixed validation prompts, stopped at the
end-of-turn token. When the run succeeds, LoRA is merged into the weights and the result is registered as a new
model `<base>-sft` (apps.registry.services.model_register_derived), with ChatML's template and stop id, and a
tokenizer spec marked "chatml" so that every loader adds the same two tokens again (conversations.with_chatml is
deterministic: their ids are the base vocabulary's size and the next).
"""

from __future__ import annotations

import logging

from django.utils.translation import gettext_noop

from apps.corpora.conversations import conversations_load
from apps.registry.models import Model
from apps.registry.selectors import model_tokenizer
from apps.registry.services import RegistryError, model_copy_tokenizer_files, model_register_derived
from apps.system import files
from apps.training import lease
from apps.training.finetune import sft_model_format
from apps.training.models import RunEvent
from workers.gpt import checkpoint as ckpt_lib
from workers.gpt import conversations as convlib
from workers.gpt import sft
from workers.gpt.chat import render_chat
from workers.gpt.config import memory_fit_error
from workers.gpt.generate import generate
from workers.training import TrainingJob, finite

log = logging.getLogger(__name__)

N_SAMPLE_PROMPTS = 3
SAMPLE_ANSWER_TOKENS = 120


class FinetuneJob(TrainingJob):
    """A TrainingJob whose model is a registry model and whose batches are conversations."""

    def load_data(self):
        run = self.run
        spec = run.data.get("sft") or {}
        self.base = Model.objects.filter(pk=run.base_model_id).first()
        if self.base is None:
            raise ValueError(f"the base model {run.data.get('base_model')!r} was deleted: start a new fine-tune "
                             f"from a model that exists")
        if run.corpus is None:
            raise ValueError(f"the conversation set {run.data.get('corpus')!r} was deleted: start a new fine-tune")
        train_convs, val_convs = conversations_load(corpus=run.corpus)
        self.tokenizer, self.template, self.end_of_turn = convlib.chat_format(
            model_tokenizer(self.base), self.base.chat_template or None)
        self.eot_id = self.tokenizer.special_tokens.get(self.end_of_turn)
        self.batches = sft.ConversationBatches.build(
            train=train_convs, val=val_convs, tokenizer=self.tokenizer, template=self.template,
            end_of_turn=self.end_of_turn, block_size=spec.get("block_size") or run.model_config["block_size"],
            batch_size=run.train_config["batch_size"])
        self.prompts = [_prompt(c, self.tokenizer, self.template) for c in val_convs[:N_SAMPLE_PROMPTS]]
        report = self.batches.report()
        cropped, dropped = (sum(r.get(key, 0) for r in report.values()) for key in ("cropped", "dropped"))
        params = {"train": f"{report['train']['conversations']:,}", "val": f"{report['val']['conversations']:,}",
                  "trained": f"{report['train']['trained_tokens']:,}", "tokens": f"{report['train']['tokens']:,}",
                  "cropped": f"{cropped:,}", "block": self.batches.block_size, "dropped": f"{dropped:,}"}
        message = (gettext_noop(
            "Conversations rendered: %(train)s training and %(val)s validation, %(trained)s trained-on (assistant) "
            "tokens of %(tokens)s; %(cropped)s conversation(s) longer than %(block)s tokens were cropped from the "
            "left (their final answer kept); %(dropped)s of them kept no assistant token after cropping and were "
            "left out.") if dropped else gettext_noop(
            "Conversations rendered: %(train)s training and %(val)s validation, %(trained)s trained-on (assistant) "
            "tokens of %(tokens)s; %(cropped)s conversation(s) longer than %(block)s tokens were cropped from the "
            "left (their final answer kept)."))
        lease.run_note(run_id=run.pk, token=self.token, kind=RunEvent.Kind.WARNING if cropped else RunEvent.Kind.GOOD,
                       message=message, params=params)
        return None, None

    def check_fits(self, model_cfg, train_cfg, train_data, val_data, device) -> None:
        problem = memory_fit_error(model_cfg, train_cfg, memory_bytes=self.device_info.get("memory_bytes"),
                                   device=f"the device of {self.run.worker}")
        if problem is not None:
            raise problem

    def runtime_tokenizer(self):
        return self.tokenizer

    def loop_inputs(self, model_cfg, device) -> dict:
        """The base model's weights, grown for ChatML and LoRA-wrapped as the run asks, and the conversation batches."""
        model = ckpt_lib.load_model(self.base.file, "cpu")
        model.train()
        sft.grow_embeddings(model, self.tokenizer)
        if model.config != model_cfg:
            raise ValueError(f"the base model {self.base.name} changed since the run was queued (its config is not the "
                             f"run's): start a new fine-tune")
        lora = (self.run.data.get("sft") or {}).get("lora")
        if lora:
            model = sft.apply_lora(model, target_modules=lora["targets"], r=lora["r"], alpha=lora["alpha"],
                                   dropout=lora["dropout"])
        self.batches.device = device
        return {"model": model, "batch_fn": self.batches}

    def sample(self, model, step: int) -> None:
        """Greedy answers to the fixed validation prompts, stopped at the end-of-turn token."""
        try:
            parts = []
            for question, ids in self.prompts:
                out = [t.id for t in generate(model, ids, max_new_tokens=SAMPLE_ANSWER_TOKENS, temperature=0.0,
                                              stop_ids=[self.eot_id] if self.eot_id is not None else [])]
                ended = bool(out) and out[-1] == self.eot_id
                answer = self.tokenizer.decode(out[:-1] if ended else out)
                parts.append(f"User: {question}\nAssistant: {answer}" + ("" if ended else " […no end of turn]"))
            text = "\n\n".join(parts)
        except Exception as exc:  # a sample is a nicety: never let it end a run
            log.warning("run %s: no sample at step %s: %s", self.run.pk, step, exc)
            return
        self.recorder.add_sample(step, text)
        if self.echo:
            self.echo(f"--- answers at step {step} ---\n{text}\n---")

    def finish(self, state) -> str:
        clean = not (state.stopped or self.diverged or self.checkpoint_error or self.supervisor.lost.is_set()
                     or self.recorder.lost.is_set())
        if clean:
            try:
                model = self.register(state)
            except (RegistryError, OSError, ValueError) as exc:
                self.fail(f"training finished but the model could not be registered: {exc}")
                return "failed: register"
            lease.run_note(run_id=self.run.pk, token=self.token, kind=RunEvent.Kind.GOOD, message=gettext_noop(
                "Registered as the model %(model)s (a draft: publish it in the registry to share it)."),
                params={"model": model.name})
            if self.echo:
                self.echo(f"registered as {model.name} ({model.slug})")
        return super().finish(state)

    def register(self, state) -> Model:
        """Merge LoRA, write the weights to a temporary folder under models/, and register them."""
        model = state.model
        if (self.run.data.get("sft") or {}).get("lora"):
            model = sft.merge_lora(model)
        model = model.to("cpu").eval()
        fmt = sft_model_format(base=self.base)
        tmp = files.temp_dir(files.artifact_path("models"), "sft")
        try:
            model_copy_tokenizer_files(base=self.base, into=tmp)
            path = ckpt_lib.save_checkpoint(tmp, model=model, step=state.step, tokenizer=fmt["tokenizer_spec"],
                                            losses={"train": state.train_loss, "val": state.val_loss},
                                            extra={"run_id": self.run.pk, "base_model": self.base.name})
        except BaseException:
            files.remove(tmp)
            raise
        return model_register_derived(run=self.run, weights_dir=tmp, weights_name=path.name, suffix="sft",
                                      step=state.step, config=model.config.to_dict(), val_loss=finite(state.val_loss),
                                      **fmt)


def _prompt(messages: list[dict], tokenizer, template: str) -> tuple[str, list[int]]:
    """(the user's question, the ids of the conversation up to its last assistant turn, that turn opened) of a
    validation conversation: what the model is asked at every evaluation."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    question = messages[last - 1]["content"] if last else ""
    text = render_chat(template, messages[:last], add_generation_prompt=True)
    return question, tokenizer.encode(text, allow_special=True)
