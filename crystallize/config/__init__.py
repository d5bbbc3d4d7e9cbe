"""Experiments defined as folders: a ``config.yaml`` beside the Python modules it names.

::

    my_experiment/
      config.yaml     # what to run: names of functions, their parameters, treatments, hypotheses
      steps.py        # @data_source, @pipeline_step, @verifier ... (any *.py file in the folder)

``config.yaml``::

    name: basic                      # default: the folder's name
    description: optional text
    replicates: 12                   # positive integer, default 1
    datasource: fetch_numbers        # or {name: fetch_numbers, params: {...}}
                                     # or {artifact: {experiment: producer, name: numbers.json,
                                     #                loader: json, condition: baseline}}
    steps:
      - add_delta                    # or {name: add_delta, params: {delta: 1.0}, exit: true}
      - summarize
    treatments:
      boost_total: {delta: 10.0}     # context values, or the name of a @treatment / fn(ctx)
    hypotheses:
      - name: order_by_p_value
        verifier: welch_t_test       # or {name: welch_t_test, params: {alpha: 0.01}}
        metrics: total               # a name, a list, or a list of lists
        ranker: rank_fn              # optional; default: lowest p_value first
    initial_ctx: {key: value}
    outputs: [numbers.json]          # artifacts this experiment writes; or [{name: ..., loader: json}]

Every ``*.py`` file of the folder (not its subfolders) is imported as a module of a
package private to the folder, so two folders may both have a ``steps.py`` (modules of
one folder import each other relatively: ``from .helpers import f``). Names are looked
up across the folder's modules; write ``module.name`` when two modules define one.
The modules are registered with cloudpickle to travel by value, so process and Ray
workers get their functions without importing the folder.

Errors are :class:`~crystallize.errors.ValidationError` naming the file, the line, the
key (``steps[1].params``) and what was expected.

Folders in the format of Crystallize 0.27 load unchanged (:mod:`.format027`: ``datasource:
{alias: fn}``, ``steps: [{name: {params}}]``, ``outputs: {alias: {file_name, loader, writer}}``,
code in ``datasources.py``, ``steps.py``, ``outputs.py``, ``verifiers.py``); a config is read
in that format when it has a shape only that format has. ``"producer#output"`` references are
linked to the producer's output, found by name in a sibling folder (:mod:`.references`).

One job per module: :mod:`.yaml_source` reads the file and words the errors,
:mod:`.folder` imports the folder's modules, :mod:`.namespace` looks names up in them,
:mod:`.build` and :mod:`.build_hypotheses` build the sections, :mod:`.codecs` holds the
named loaders and writers, :mod:`.format027` builds the 0.27 format, :mod:`.references` finds
and links the experiments a config reads from, and :mod:`.loader` puts an experiment together. None of them
imports :mod:`crystallize.experiment`: the experiment class is passed in.
"""

from __future__ import annotations

# The codecs stay importable here, as before the split (pickles made then name them
# ``crystallize.config.load_json``); so does ``_package_name`` (tests use it).
from .codecs import load_bytes as load_bytes
from .codecs import load_json as load_json
from .codecs import load_pickle as load_pickle
from .codecs import load_text as load_text
from .codecs import write_bytes as write_bytes
from .codecs import write_json as write_json
from .codecs import write_pickle as write_pickle
from .codecs import write_text as write_text
from .folder import package_name as _package_name  # noqa: F401
from .loader import CONFIG_FILE, load_experiment, load_experiment_folder, load_experiment_graph
from .references import ExperimentFolderNotFoundError, find_experiments_root

__all__ = [
    "CONFIG_FILE",
    "ExperimentFolderNotFoundError",
    "find_experiments_root",
    "load_experiment",
    "load_experiment_folder",
    "load_experiment_graph",
]
