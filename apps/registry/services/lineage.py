"""Models made from other things, each row remembering where it came from (its lineage): a pretraining run's
checkpoint promoted by its owner, and the result of a fine-tuning (SFT) or RL (GRPO) run registered by the train
worker on top of its base model. The lineage the model page draws is read from these fields (selectors.model_lineage):
corpus → tokenizer → run → checkpoint → model, or base model → data set → run → model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from django.core.exceptions import PermissionDenied

from apps.registry.errors import RegistryError
from apps.registry.models import Model
from apps.registry.services.rows import architecture_of, finish_files, model_check_name, unique_name, unique_slug
from apps.registry.weights import WeightsFileError, copy_tensors, merge_lora_tensors
from apps.system import files
from apps.tokenization.selectors import tokenizer_runtime
from apps.training.finetune import sft_model_format
from apps.training.permissions import run_may_view
from workers.gpt.config import GPTConfig, param_count
from workers.gpt.formats.llmlab import sidecar_path
from workers.gpt.tokenizers import TokenizerError


def model_promote(*, checkpoint, user, name: str = "", description: str = "") -> Model:
    """Copy a run's checkpoint (weights only: the optimizer state stays behind) into the registry as a draft owned by
    the user. The run's owner or staff may promote."""

    run = checkpoint.run
    if not run_may_view(run=run, user=user):
        raise PermissionDenied("Only the run's owner or staff may promote its checkpoints.")
    src = checkpoint.file
    if not src.exists() or not sidecar_path(src).exists():
        raise RegistryError(f"The checkpoint at step {checkpoint.step} is no longer on disk (rotated away?): promote "
                            f"a newer one.", status=409)
    if run.kind != run.Kind.PRETRAIN:
        return _promote_derived(checkpoint=checkpoint)
    name = model_check_name(name) if name.strip() else unique_name(f"{run.name} · step {checkpoint.step}")
    cfg = GPTConfig.from_dict(run.model_config)
    tmp = files.temp_dir(files.artifact_path("models"), "promote")
    try:
        weights = tmp / src.name
        copy_tensors(src, weights, keep=lambda key: key.startswith("model."))
        sidecar = json.loads(sidecar_path(src).read_text())
        sidecar.update(optimizer=None, rng_state={}, extra={**sidecar.get("extra", {}), "promoted_from": {
            "run": run.pk, "run_name": run.name, "step": checkpoint.step}})
        files.write_json(sidecar_path(weights), sidecar)
    except WeightsFileError as e:
        files.remove(tmp)
        raise RegistryError(f"The checkpoint file cannot be read: {e}", status=409) from None
    except BaseException:
        files.remove(tmp)
        raise
    tokenizer = run.tokenizer
    spec = ({"kind": tokenizer.kind, "name": tokenizer.name, "path": tokenizer.path, "fingerprint": tokenizer.fingerprint}
            if tokenizer is not None else {})
    if not spec:
        files.remove(tmp)
        raise RegistryError("This run's tokenizer was deleted, so its model could not read or write text.", status=409)
    stop_ids = [tokenizer_eot] if (tokenizer_eot := _endoftext_id(tokenizer)) is not None else []
    lineage = {"corpus": run.data.get("corpus") or (run.corpus.name if run.corpus else None),
               "corpus_id": run.corpus_id, "tokenizer": tokenizer.name, "tokenizer_id": tokenizer.pk,
               "run": run.name, "run_id": run.pk, "step": checkpoint.step}
    return finish_files(
        tmp=tmp, weights_name=src.name, name=name, slug=unique_slug(name), description=description,
        architecture=architecture_of(cfg), config=cfg.to_dict(), n_params=param_count(cfg), tokenizer=tokenizer,
        tokenizer_spec=spec, chat_template="", stop_ids=stop_ids, source=Model.Source.RUN,
        source_detail={"format": "llmlab", "file": src.name, "losses": sidecar.get("losses", {})},
        run=run, checkpoint=checkpoint, step=checkpoint.step,
        val_loss=checkpoint.val_loss if checkpoint.val_loss is not None else sidecar.get("losses", {}).get("val"),
        lineage=lineage, status=Model.Status.DRAFT, owner=user,
    )


def _promote_derived(*, checkpoint) -> Model:
    """A checkpoint of a fine-tuning or GRPO run becomes the model the run registers when it ends, through the same
    service: `<base>-sft` (its tokenizer, ChatML when added, and chat template: finetune.sft_model_format) or
    `<base>-grpo`, lineage base model -> data set -> run, a draft of the run's owner. LoRA adapters are merged into
    the weights (weights.merge_lora_tensors), the optimizer state stays behind."""
    run = checkpoint.run
    base = run.base_model
    if base is None:
        raise RegistryError(f"The base model of this run ({run.data.get('base_model', '?')}) was deleted, so its "
                            f"tokenizer and chat template are unknown: this checkpoint cannot become a model.",
                            status=409)
    src = checkpoint.file
    tmp = files.temp_dir(files.artifact_path("models"), "promote")
    try:
        lora = run.lora
        weights = tmp / src.name
        renames = {}
        if lora:
            renames = merge_lora_tensors(src, weights, scale=lora["alpha"] / lora["r"],
                                         keep=lambda key: key.startswith("model."))
        else:
            copy_tensors(src, weights, keep=lambda key: key.startswith("model."))
        sidecar = json.loads(sidecar_path(src).read_text())
        aliases = {renames.get(k, k): renames.get(v, v) for k, v in (sidecar.get("aliases") or {}).items()}
        fmt = sft_model_format(base=base) if run.kind == run.Kind.SFT else {}
        sidecar.update(optimizer=None, rng_state={}, aliases=aliases,
                       tokenizer=fmt["tokenizer_spec"] if fmt else base.tokenizer_spec,
                       extra={"run_id": run.pk, "promoted_from": {"run": run.pk, "run_name": run.name,
                                                                  "step": checkpoint.step}})
        files.write_json(sidecar_path(weights), sidecar)
        model_copy_tokenizer_files(base=base, into=tmp)
    except (WeightsFileError, TokenizerError, ValueError) as e:
        files.remove(tmp)
        raise RegistryError(f"The checkpoint at step {checkpoint.step} cannot become a model: {e}", status=409) \
            from None
    except BaseException:
        files.remove(tmp)
        raise
    return model_register_derived(run=run, weights_dir=tmp, weights_name=src.name, suffix=run.kind,
                                  step=checkpoint.step, val_loss=checkpoint.val_loss, **fmt)


def model_copy_tokenizer_files(*, base: Model, into: Path) -> None:
    """Copy an imported base model's tokenizer folder into `into` (the folder a derived model is being written to):
    a derived model's spec points at its own models/<id>/tokenizer (see rows.finish_files)."""
    if (base.tokenizer_spec or {}).get("kind") == "imported":
        shutil.copytree(base.directory / "tokenizer", Path(into) / "tokenizer")


def _endoftext_id(tokenizer) -> int | None:
    specials = tokenizer.special_tokens or []
    if "<|endoftext|>" not in specials:
        return None

    try:
        return tokenizer_runtime(tokenizer=tokenizer).special_tokens.get("<|endoftext|>")
    except Exception:  # a tokenizer whose files are gone: generation simply runs to max tokens
        return None


def model_register_derived(*, run, weights_dir: Path, weights_name: str, suffix: str, step: int,
                           config: dict | None = None, tokenizer_spec: dict | None = None,
                           chat_template: str | None = None, stop_ids: list[int] | None = None,
                           val_loss: float | None = None, description: str = "") -> Model:
    """Register the weights a fine-tuning (suffix "sft") or RL (suffix "grpo") run wrote in `weights_dir` (a
    temporary folder under models/, holding `weights_name` and its sidecar) as a draft `<base>-<suffix>` of the run's
    owner (e.g. SmolLM2-135M-Instruct-grpo; a number is added when the name is taken).

    What the caller leaves out is the base model's: the model config (run.model_config), tokenizer spec, chat
    template and stop ids; an SFT run passes its own (finetune.sft_model_format: it may add ChatML's tokens, which
    grows the vocabulary). An imported tokenizer's files must be in `weights_dir` already
    (model_copy_tokenizer_files). The lineage says base model -> data set -> run -> this model; an SFT model's
    description says how it was trained. All or nothing: the folder is moved into models/<id>/ with the row, or
    removed."""
    weights_dir = Path(weights_dir)
    base = run.base_model
    inherited = (tokenizer_spec, chat_template, stop_ids)
    if base is None and any(value is None for value in inherited):
        files.remove(weights_dir)
        raise RegistryError("The run's base model was deleted, so its tokenizer and chat template are unknown.",
                            status=409)
    base_name = base.name if base is not None else run.data.get("base_model") or "model"
    spec = dict(tokenizer_spec if tokenizer_spec is not None else base.tokenizer_spec)
    # an imported tokenizer gets its own row in finish_files; the others are shared rows
    tokenizer = None if spec.get("kind") == "imported" else (run.tokenizer or (base.tokenizer if base else None))
    cfg = GPTConfig.from_dict(dict(config if config is not None else run.model_config))
    lineage = {"base_model": base_name, "base_model_id": base.pk if base is not None else None,
               "corpus": run.data.get("corpus") or (run.corpus.name if run.corpus else None),
               "corpus_id": run.corpus_id, "tokenizer": spec.get("name"), "run": run.name, "run_id": run.pk,
               "kind": run.kind, "step": step}
    detail = {"format": "llmlab", "file": weights_name, "kind": run.kind}
    if sft := run.data.get("sft"):
        detail["finetune"] = sft
        how = f"LoRA r={sft['lora']['r']} merged" if sft.get("lora") else "full fine-tuning"
        description = description or (
            f"{base_name} fine-tuned on {lineage['corpus']} for {step:,} steps ({how}), loss on the assistant's "
            f"tokens only" + (", ChatML added to its tokenizer." if sft.get("chatml_added") else "."))
    name = unique_name(f"{base_name}-{suffix}")
    return finish_files(
        tmp=weights_dir, weights_name=weights_name, name=name, slug=unique_slug(name), description=description,
        architecture=architecture_of(cfg), config=cfg.to_dict(), n_params=param_count(cfg), tokenizer=tokenizer,
        tokenizer_spec=spec, chat_template=chat_template if chat_template is not None else base.chat_template,
        stop_ids=list(stop_ids if stop_ids is not None else base.stop_ids), source=Model.Source.RUN,
        source_detail=detail, run=run, step=step, val_loss=val_loss, lineage=lineage, base=base,
        status=Model.Status.DRAFT, owner=run.owner)
