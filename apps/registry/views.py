from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from apps.registry import selectors, services
from apps.registry.forms import ImportForm
from apps.registry.models import Model, ModelExport, ModelImport
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
    return _detail(request, _get(slug, request.user))


def _detail(request, model: Model, *, export_error: str = "", status: int = 200):
    return render(request, "registry/detail.html", {
        "summary": selectors.model_summary(model), "lineage": selectors.model_lineage(model),
        "files": selectors.model_files(model), "may_change": selectors.model_may_change(model=model, user=request.user),
        "config": sorted(model.config.items()), "api_base": request.build_absolute_uri("/v1"),
        **_exports_context(request, model, export_error),
    }, status=status)


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


# ------------------------------------------------------------------------------------------------------- export


def _exports_context(request, model: Model, error: str = "") -> dict:
    jobs = selectors.model_exports(model=model)
    return {"model": model, "export_error": error, "export_formats": ModelExport.Format.choices,
            "exports": [{"job": j, "may_cancel": selectors.model_export_may_cancel(job=j, user=request.user)}
                        for j in jobs],
            "exports_polling": any(j.active for j in jobs)}


def _exports(request, model: Model, *, error: str = "", status: int = 200):
    """After an export action: the #exports fragment for htmx, the model page otherwise."""
    if request.htmx:
        return render(request, "registry/_exports.html", _exports_context(request, model, error), status=status)
    if error:
        return _detail(request, model, export_error=error, status=status)
    return redirect("registry:detail", slug=model.slug)


@require_POST
def model_export(request, slug):
    """Start an export (or find the running or finished one) of the model in the format asked for."""
    model = _get(slug, request.user)
    try:
        job, new = services.model_export_create(model=model, user=request.user, fmt=request.POST.get("format"))
    except RegistryError as e:
        return _exports(request, model, error=str(e), status=e.status)
    if not request.htmx:
        messages.success(request, (_("Exporting %(model)s: an infer worker writes the archive; follow it below.")
                                   % {"model": model.name}) if new else _("This export is already under way or done."))
    return _exports(request, model)


@require_GET
def model_exports(request, slug):
    return render(request, "registry/_exports.html", _exports_context(request, _get(slug, request.user)))


def _export_job(model: Model, export_id: int) -> ModelExport:
    try:
        return selectors.model_export_get(model=model, export_id=export_id)
    except RegistryError:
        raise Http404 from None


@require_POST
def model_export_cancel(request, slug, export_id):
    model = _get(slug, request.user)
    services.model_export_cancel(job=_export_job(model, export_id), user=request.user)  # PermissionDenied: 403
    return _exports(request, model)


@require_GET
def model_export_download(request, slug, export_id):
    model = _get(slug, request.user)
    job = _export_job(model, export_id)
    if job.status != ModelExport.Status.SUCCEEDED or job.file is None or not job.file.exists():
        raise Http404
    return FileResponse(open(job.file, "rb"), as_attachment=True, filename=f"{model.slug}-{job.format}.zip")


# ------------------------------------------------------------------------------------------------------ promote


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
