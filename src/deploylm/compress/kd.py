"""The knowledge-distillation loss (Hinton et al. 2015) and a transformers Trainer that trains on it.

Shared by `distill` (teacher → student) and `prune --distill-from-parent` (unpruned parent → pruned model).
Trainer already does the optimiser, schedule, evaluation, checkpoints and exact resumption; only the loss
differs, so this subclasses it instead of writing a training loop."""

from __future__ import annotations

from transformers import Trainer

TEACHER_PREFIX = "teacher_"  # batch keys the teacher reads when it has a tokenizer of its own
# Batch keys that are no model's input: the teacher's logits computed before training (compress/distill.py labels
# every row once instead of at every step), and whether a row has a hard label (unlabelled transfer text has not).
TEACHER_LOGITS = "kd_teacher_logits"
HAS_LABEL = "kd_has_label"


def kd_loss(student_logits, teacher_logits, labels=None, temperature: float = 2.0, alpha: float = 0.5,
            has_label=None):
    """alpha * T² · KL(teacher_T ‖ student_T) + (1 − alpha) * cross-entropy on the hard labels.

    Logits are [..., classes]: one row per sequence (classification) or per token (token classification);
    positions whose label is -100 (padding, sub-word continuations) count in neither term. T² keeps the soft
    term's gradients the size of the hard term's whatever the temperature (Hinton et al., section 2).
    has_label: [batch] bools; a row without a hard label (text the teacher alone labels) counts in the soft
    term only, its `labels` marking which positions do (any class id there, -100 elsewhere). A batch with no
    hard label at all is alpha * soft, so the soft term weighs the same in every batch."""
    import torch.nn.functional as F

    classes = student_logits.shape[-1]
    s, t = student_logits.reshape(-1, classes), teacher_logits.reshape(-1, classes).detach()
    flat = labels.reshape(-1) if labels is not None else None
    hard = None
    if flat is not None:
        keep = flat != -100
        if has_label is not None:  # one flag per row, spread over the row's token positions
            rows = has_label.reshape(-1, *([1] * (labels.dim() - 1))).expand_as(labels).reshape(-1)
            hard = rows[keep].bool()
        s, t, flat = s[keep], t[keep], flat[keep]
    soft = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                    reduction="batchmean") * temperature ** 2
    if flat is None or alpha >= 1.0:
        return soft
    if hard is not None:
        if not bool(hard.any()):
            return alpha * soft
        s, flat = s[hard], flat[hard]
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(s, flat)


def hidden_mse(student_states, teacher_states, layer_map, mask):
    """Mean squared error between each student layer's output and its mapped teacher layer's, over the real
    (mask 1) tokens. States are transformers' hidden_states tuples: [0] the embeddings, [i + 1] layer i."""
    m = mask.unsqueeze(-1).to(student_states[0].dtype)
    total = 0.0
    for i, j in enumerate(layer_map):
        diff = (student_states[i + 1] - teacher_states[j + 1].detach()) ** 2 * m
        total = total + diff.sum() / (m.sum() * diff.shape[-1])
    return total / len(layer_map)


def attention_kl(student_attn, teacher_attn, layer_map, mask):
    """KL(teacher ‖ student) of each head's attention distribution (MiniLM, Wang et al. 2020), per real query
    token, averaged over heads, queries and the mapped layers. Attentions: [batch, heads, query, key]."""
    import torch

    q = mask[:, None, :].to(student_attn[0].dtype)  # [batch, 1, query]
    total = 0.0
    for i, j in enumerate(layer_map):
        t = teacher_attn[j].detach()
        kl = (t * (torch.log(t.clamp_min(1e-12)) - torch.log(student_attn[i].clamp_min(1e-12)))).sum(-1)
        total = total + (kl * q).sum() / (q.sum() * kl.shape[1])
    return total / len(layer_map)


def split_teacher_inputs(inputs: dict) -> tuple[dict, dict]:
    """(student inputs, teacher inputs): the teacher reads its own `teacher_*` keys when the batch has them
    (a teacher with another tokenizer), else the student's."""
    student = {k: v for k, v in inputs.items() if not k.startswith(TEACHER_PREFIX)}
    teacher = {k[len(TEACHER_PREFIX):]: v for k, v in inputs.items() if k.startswith(TEACHER_PREFIX)}
    if not teacher:
        teacher = {k: v for k, v in student.items() if k != "labels"}
    return student, teacher


class DistillationTrainer(Trainer):
    """Trainer whose loss is kd_loss against a frozen teacher's logits (plus, optionally, the hidden-state and
    attention losses of the student's layers against their `layer_map`ped teacher layers).

    The teacher's logits come from the batch (TEACHER_LOGITS, computed before training) when it has them, else
    from a teacher forward at each step; `teacher` may be None when every batch has them and no layer loss is
    asked. Trainer must keep the batch's extra keys: pass TrainingArguments(remove_unused_columns=False)."""

    def __init__(self, *args, teacher, temperature: float = 2.0, alpha: float = 0.5, layer_map=None,
                 hidden_weight: float = 0.0, attention_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if teacher is not None:
            from ..runtime.torch_runner import model_input_names

            self.teacher = teacher.eval().to(self.args.device)
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self._teacher_inputs = set(model_input_names(self.teacher))
        else:
            self.teacher = None
        self.temperature, self.alpha = temperature, alpha
        self.layer_map = list(layer_map or [])
        self.hidden_weight, self.attention_weight = hidden_weight, attention_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        teacher_logits, has_label = inputs.pop(TEACHER_LOGITS, None), inputs.pop(HAS_LABEL, None)
        student_inputs, teacher_inputs = split_teacher_inputs(inputs)
        labels = student_inputs.pop("labels", None)
        layers = {"output_hidden_states": self.hidden_weight > 0, "output_attentions": self.attention_weight > 0}
        outputs = model(**student_inputs, **{k: True for k, v in layers.items() if v})
        teacher_out = None
        if teacher_logits is None or any(layers.values()):
            teacher_out = self._teacher_forward(teacher_inputs, layers)
            teacher_logits = teacher_out.logits if teacher_logits is None else teacher_logits
        loss = kd_loss(outputs.logits, teacher_logits, labels, self.temperature, self.alpha, has_label)
        mask = student_inputs.get("attention_mask")
        if self.hidden_weight > 0:
            loss = loss + self.hidden_weight * hidden_mse(outputs.hidden_states, teacher_out.hidden_states,
                                                          self.layer_map, mask)
        if self.attention_weight > 0:
            loss = loss + self.attention_weight * attention_kl(outputs.attentions, teacher_out.attentions,
                                                               self.layer_map, mask)
        # Only the logits go back: evaluation hands every returned output to compute_metrics.
        return (loss, {"logits": outputs.logits}) if return_outputs else loss

    def _teacher_forward(self, teacher_inputs: dict, layers: dict):
        import torch

        if self.teacher is None:
            raise RuntimeError("DistillationTrainer needs a teacher: a batch came without teacher logits.")
        feeds = {k: v for k, v in teacher_inputs.items() if k in self._teacher_inputs}
        with torch.no_grad():
            return self.teacher(**feeds, **{k: True for k, v in layers.items() if v})
