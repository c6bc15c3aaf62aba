"""Pages of the task-set kind of data set: the new-task-set page (generate or upload) and a task set's page."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from apps.corpora import selectors, tasksets
from apps.corpora.models import Corpus
from apps.corpora.taskset_forms import TaskSetGenerateForm, TaskSetUploadForm
from apps.corpora.text import CorpusInputError


@login_required
@require_http_methods(["GET", "POST"])
def taskset_new(request):
    generate, upload = TaskSetGenerateForm(prefix="gen"), TaskSetUploadForm(prefix="up")
    error, status = None, 200
    if request.method == "POST":
        try:
            if request.POST.get("mode") == "upload":
                upload = TaskSetUploadForm(request.POST, request.FILES, prefix="up")
                if upload.is_valid():
                    d = upload.cleaned_data
                    corpus = tasksets.taskset_upload(owner=request.user, name=d["name"], data=d["file"].read(),
                                                     description=d["description"])
                    return _created(request, corpus)
            else:
                generate = TaskSetGenerateForm(request.POST, prefix="gen")
                if generate.is_valid():
                    corpus = tasksets.taskset_generate(owner=request.user, **generate.cleaned_data)
                    return _created(request, corpus)
            status = 400
        except CorpusInputError as exc:
            error, status = str(exc), exc.status
    return render(request, "corpora/taskset_new.html", {"generate": generate, "upload": upload, "error": error},
                  status=status)


def _created(request, corpus: Corpus):
    t = corpus.stats["task"]
    messages.success(request, _("Made %(name)s: %(train)s train and %(held)s held-out problems.")
                     % {"name": corpus.name, "train": t["n_train"], "held": t["n_heldout"]})
    return redirect("corpora:detail", corpus_id=corpus.id)


def taskset_detail(request, corpus: Corpus):
    """A task set's page (corpora:detail renders it for kind tasks): statistics and problems with their answers."""
    context = {"corpus": corpus, "task": corpus.stats.get("task", {}), "stats": corpus.stats,
               "sample": tasksets.taskset_sample(corpus=corpus),
               "may_edit": selectors.corpus_may_edit(corpus=corpus, user=request.user)}
    return render(request, "corpora/taskset.html", context)
