"""Distillation recipes by name: each builds the `DistillConfig`, the data object and the
teacher wrapper for one student family, runs `models.distill.distill`, and evaluates.

``register_recipe(name)`` / ``get_recipe(name)`` / ``list_recipes()`` work like the loss and
model registries (duplicates rejected, unknown names list the registered ones). A recipe is a
function returning a `RecipeResult` (student, teacher, metrics, timings, the config it used).

- ``lighthgnn`` — LightHGNN / LightHGNN+ (Feng et al., ICLR 2024): a graph-free MLP student
  from an HGNN teacher on a hypergraph. CE on the train labels + T²·KL(teacher ‖ student) on
  the soft labels of *all* nodes of the training graph + (LightHGNN+) the hyperedge term
  ``group_kl``, on hyperedges sampled each step with probability equal to their reliability
  (`hyperedge_reliability`: stability of the teacher's prediction entropy under feature noise).
  ``setting="transductive"`` distils on the whole graph; ``"inductive"`` trains teacher and
  student without the ``test_inductive`` nodes and evaluates the student on those nodes from
  their features alone. ``kd=False`` gives the plain student S₀ (CE only, same steps and seed).
- ``tokenbag`` — a model2vec-like token-bag sentence encoder (`models.mlp.TokenBagEncoder`)
  from all-MiniLM-L6-v2: one teacher pass (`teacher_pass`) gives the sentence embeddings and
  the teacher's contextual vector of every word; each embedding row starts as the mean
  contextual vector of the words its token comes from (`init_from_contexts`; or, without
  them, the model2vec-style single-word embeddings, `init_from_teacher_words`), then
  ``hidden_cosine`` to the teacher's sentence embedding + ``relation_mse`` (in-batch
  similarity matrices). Evaluated by the Spearman correlation of teacher vs student pairwise
  similarities on held-out sentences and top-10 retrieval overlap (`embedding_agreement`).

One file per recipe in this package (``lighthgnn``, ``tokenbag``, ``encdec`` for
``encdec-from-decoder``, ``mohawk``, ``sinkd`` for SinKD's CE/KL/Sinkhorn weighting for any teacher
and student), each registering itself on import; what they share is in ``base``. ``lighthgnn``, ``tokenbag`` and ``encdec-from-decoder`` take ``extra_losses``: more
`LossSpec` terms added to their distillation losses (e.g. ``recipes.sinkd.sinkd_term()``).

Example::

    from edgesdk.models.distill.recipes import get_recipe
    from edgesdk.models.data import synthetic_hypergraph
    res = get_recipe("lighthgnn")(synthetic_hypergraph(homophily=0.8, noise=2.0), setting="inductive")
    print(res.metrics)          # teacher / student accuracies on the held-out nodes
    student = res.student       # an `MLP`: node features -> logits, no graph needed

Plain PyTorch (imports nothing of the SDK beyond `models`).
"""

from edgesdk.models.distill.recipes.base import (  # noqa: F401
    RECIPES, BestState, RecipeResult, UnknownRecipeError, get_recipe, list_recipes, num_threads, register_recipe,
)
from edgesdk.models.distill.recipes.lighthgnn import (  # noqa: F401
    GraphTeacher, HGNNFullGraph, HypergraphNodes, hyperedge_reliability, lighthgnn, padded_hyperedges,
)
from edgesdk.models.distill.recipes.tokenbag import (  # noqa: F401
    SentencePairs, TargetLookup, embedding_agreement, init_from_contexts, init_from_teacher_words, spearman,
    teacher_pass, tokenbag,
)
from edgesdk.models.distill.recipes import encdec, mohawk, sinkd  # noqa: E402,F401  (each registers its recipe)

__all__ = ["RecipeResult", "register_recipe", "get_recipe", "list_recipes", "UnknownRecipeError",
           "HypergraphNodes", "GraphTeacher", "HGNNFullGraph", "hyperedge_reliability", "padded_hyperedges",
           "SentencePairs", "TargetLookup", "embedding_agreement", "spearman", "init_from_teacher_words",
           "init_from_contexts", "teacher_pass",
           "lighthgnn", "tokenbag"]
