"""Writes for the model registry. Views, the admin, the seed command and the worker glue all come through here, and
import from this package; each idea is one module:

    rows.py     a model row's life: names, the all-or-nothing files -> row step, rename / publish / archive / delete
    imports.py  GGUF and Hugging Face imports (directly, or as a ModelImport job), the SmolLM2 default
    lineage.py  models made from other things: a promoted checkpoint, a fine-tuning or RL run's result
    exports.py  ModelExport jobs: a model written out as a Hugging Face directory, zipped, for download

Files first, row last: an import or a promotion writes into a hidden temporary directory under models/, and only
when every file is complete is the row created and the directory renamed to models/<id>/ (in one transaction, so a
failure at any point leaves neither a row nor a stray model behind). An export's archive is written the same way.
"""

from apps.registry.errors import ExportCancelled, ImportCancelled, RegistryError
from apps.registry.services.exports import (model_export_cancel, model_export_create, model_export_format_check,
                                            model_export_run)
from apps.registry.services.imports import (SMOLLM2_DESCRIPTION, SMOLLM2_NAME, import_source_check,
                                            model_import_cancel, model_import_create, model_import_file,
                                            model_import_run, model_seed_defaults, smollm2_gguf_path)
from apps.registry.services.lineage import model_copy_tokenizer_files, model_promote, model_register_derived
from apps.registry.services.rows import model_check_name, model_delete, model_set_status, model_update

__all__ = [
    "ExportCancelled", "ImportCancelled", "RegistryError",
    "model_export_cancel", "model_export_create", "model_export_format_check", "model_export_run",
    "SMOLLM2_DESCRIPTION", "SMOLLM2_NAME", "import_source_check", "model_import_cancel", "model_import_create",
    "model_import_file", "model_import_run", "model_seed_defaults", "smollm2_gguf_path",
    "model_copy_tokenizer_files", "model_promote", "model_register_derived",
    "model_check_name", "model_delete", "model_set_status", "model_update",
]
