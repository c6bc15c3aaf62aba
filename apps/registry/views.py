import shutil
import tempfile
from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.registry import selectors, services
from apps.registry.forms import ImportForm
from apps.registry.models import Model, ModelImport
from apps.registry.services import RegistryError
from apps.training.selectors import RunNotFound, checkpoint_get


def _get(slug, user) -> Model:
    try:
        return selectors.model_get(slug=slug, user=user)
    except RegistryError:
        raise Http404 from None


@require_GET
def model_list(request):
    models = selectors.model_list(user=request.user)
    return render(request, "registry/list.html", {
        "models": [{"m": m, "summary": selectors.model_summary(m)} for m in models],
        "is_staff": request.user.is_staff,
    })


@require_GET
def model_detail(request, slug):
    model = _get(slug, request.user)
    return render(request, "registry/detail.html", {
        "model": model, "summary": selectors.model_summary(model), "lineage": selectors.model_lineage(model),
        "files": selectors.model_files(model), "may_change": selectors.model_may_change(model=model, user=request.user),
        "config": sorted(model.config.items()), "api_base": request.build_absolute_uri("/v1"),
    })


@require_POST
def model_status(request, slug):
    model = _get(slug, request.user)
    try:
        services.model_update(model=model, user=request.user, status=request.POST.get("status"))
    except PermissionDenied as e:
        messages.error(request, str(e))
    except RegistryError as e:
        messages.error(request, str(e))
    else:
        messages.success(request, f"{model.name} is now {model.status}.")
    return redirect("registry:detail", slug=model.slug)


@require_GET
def model_download(request, slug, kind):
    model = _get(slug, request.user)
    try:
        path = selectors.model_file_path(model=model, kind=kind)
    except RegistryError:
        raise Http404 from None
    if not path.exists():
        raise Http404
    return FileResponse(open(path, "rb"), as_attachment=True, filename=f"{model.slug}-{path.name}")


@require_GET
def model_export(request, slug):
    """The model in the Hugging Face layout (config.json, model.safetensors, tokenizer.json), zipped."""
    from workers.gpt.formats import ImportRefused
    from workers.gpt.formats.hf import export_hf

    model = _get(slug, request.user)
    work = Path(tempfile.mkdtemp(prefix="llmlab-export-"))
    try:
        tok = selectors.model_tokenizer(model)
        target = work / model.slug
        try:
            export_hf(model.file, target, tokenizer=tok if hasattr(tok, "mergeable_ranks") else None,
                      chat_template=model.chat_template or None, stop_ids=model.stop_ids)
        except ImportRefused as e:
            messages.error(request, f"{model.name} cannot be exported to the Hugging Face layout: {e}")
            return redirect("registry:detail", slug=model.slug)
        archive = shutil.make_archive(str(work / model.slug), "zip", root_dir=work, base_dir=model.slug)
        handle = open(archive, "rb")
    finally:
        shutil.rmtree(work / model.slug, ignore_errors=True)
    response = FileResponse(handle, as_attachment=True, filename=f"{model.slug}-hf.zip")
    # the zip is unlinked once the response is closed; the open handle keeps it readable until then
    Path(archive).unlink()
    shutil.rmtree(work, ignore_errors=True)
    return response


@login_required
@require_POST
def promote(request, checkpoint_id):
    try:
        checkpoint = checkpoint_get(checkpoint_id=checkpoint_id, user=request.user)
    except RunNotFound:
        raise Http404 from None  # someone else's checkpoint looks absent
    try:
        model = services.model_promote(checkpoint=checkpoint, user=request.user, name=request.POST.get("name", ""))
    except PermissionDenied:
        raise Http404 from None  # someone else's run looks absent
    except RegistryError as e:
        messages.error(request, str(e))
        return redirect("training:run", run_id=checkpoint.run_id)
    messages.success(request, f"Promoted step {checkpoint.step} of {checkpoint.run.name} to the model "
                              f"“{model.name}” (a draft: staff can publish it).")
    return redirect("registry:detail", slug=model.slug)


def _staff(request):
    if not request.user.is_authenticated or not request.user.is_staff:
        raise Http404


def import_page(request):
    _staff(request)
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            job = form.save(user=request.user)
        except RegistryError as e:
            form.add_error(e.field if e.field in form.fields else None, str(e))
        else:
            messages.success(request, f"Importing {job.name}: an infer worker converts it; follow it below.")
            return redirect("registry:import")
    jobs = list(selectors.import_list(user=request.user))
    return render(request, "registry/import.html", {"form": form, "jobs": jobs, "polling": any(j.active for j in jobs)},
                  status=400 if form.errors else 200)


@require_GET
def import_jobs(request):
    _staff(request)
    jobs = list(selectors.import_list(user=request.user))
    return render(request, "registry/_import-jobs.html", {"jobs": jobs, "polling": any(j.active for j in jobs)})


@require_POST
def import_cancel(request, import_id):
    _staff(request)
    job = get_object_or_404(ModelImport, pk=import_id)
    services.model_import_cancel(job=job, user=request.user)
    return redirect("registry:import")
