import torch

from finpulse.models.distillation import make_student
from finpulse.models.weights import default_base_model, load_classifier


def test_student_copies_the_chosen_teacher_layers_and_keeps_the_rest() -> None:
    teacher = load_classifier(default_base_model())
    student = make_student(teacher, (0, 5))
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    for student_layer, teacher_layer in ((0, 0), (1, 5)):
        mine = student.bert.encoder.layer[student_layer].output.dense.weight
        theirs = teacher.bert.encoder.layer[teacher_layer].output.dense.weight
        assert torch.equal(mine, theirs) and mine.data_ptr() != theirs.data_ptr()
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert teacher.config.num_hidden_layers == 6  # the teacher is left as it was
    ids = torch.tensor([[101, 2000, 102]])
    assert student(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape == (1, 3)
