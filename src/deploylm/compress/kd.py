"""The knowledge-distillation loss (Hinton et al. 2015) and a transformers Trainer that trains on it.

Shared by `distill` (teacher → student) and `prune --distill-from-parent` (unpruned parent → pruned model).
Trainer already does the optimiser, schedule, evaluation, checkpoints and exact resumption; only the loss
differs, so this subclasses it instead of writing a training loop."""

from __future__ import annotations

from transformers import Trainer

TEACHER_PREFIX = "teacher_"  # batch keys the teacher reads when it has a tokenizer of its own


def kd_loss(student_logits, teacher_logits, labels=None, temperature: float = 2.0, alpha: float = 0.5):
    """alpha * T² · KL(teacher_T ‖ student_T) + (1 − alpha) * cross-entropy on the hard labels.

    Logits are [..., classes]: one row per sequence (classification) or per token (token classification);
    positions whose label is -100 (padding, sub-word continuations) count in neither term. T² keeps the soft
    term's gradients the size of the hard term's whatever the temperature (Hinton et al., section 2)."""
    import torch.nn.functional as F

    classes = student_logits.shape[-1]
    s, t = student_logits.reshape(-1, classes), teacher_logits.reshape(-1, classes).detach()
    flat = labels.reshape(-1) if labels is not None else None
    if flat is not None:
        keep = flat != -100
        s, t, flat = s[keep], t[keep], flat[keep]
    soft = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                    reduction="batchmean") * temperature ** 2
    if flat is None or alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(s, flat)


def split_teacher_inputs(inputs: dict) -> tuple[dict, dict]:
    """(student inputs, teacher inputs): the teacher reads its own `teacher_*` keys when the batch has them
    (a teacher with another tokenizer), else the student's."""
    student = {k: v for k, v in inputs.items() if not k.startswith(TEACHER_PREFIX)}
    teacher = {k[len(TEACHER_PREFIX):]: v for k, v in inputs.items() if k.startswith(TEACHER_PREFIX)}
    if not teacher:
        teacher = {k: v for k, v in student.items() if k != "labels"}
    return student, teacher


class DistillationTrainer(Trainer):
    """Trainer whose loss is kd_loss against a frozen teacher's logits."""

    def __init__(self, *args, teacher, temperature: float = 2.0, alpha: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval().to(self.args.device)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        import torch

        student_inputs, teacher_inputs = split_teacher_inputs(inputs)
        labels = student_inputs.pop("labels", None)
        outputs = model(**student_inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(**teacher_inputs).logits
        loss = kd_loss(outputs.logits, teacher_logits, labels, self.temperature, self.alpha)
        return (loss, outputs) if return_outputs else loss
