"""Layer 6: interpreting a text classifier: `TextClassificationInterpretation` adds, to the numbers of
`ClassificationInterpretation`, which words a prediction rests on (`intrinsic_attention`: the size of
the gradient of the class's score with respect to each word's embedding, as fastai v1 computes it),
drawn as an HTML heat map of the words (`show_intrinsic_attention`), and the top losses as a table
of texts (`show_top_losses`).
"""
from __future__ import annotations

import html

import torch

from ..interpret import ClassificationInterpretation
from .data import Text

__all__ = ["TextClassificationInterpretation", "attention_html"]


def attention_html(words: list[str], weights) -> str:
    """The words as HTML spans, each on a background whose strength is its weight (0 to 1)."""
    spans = [f'<span title="{float(w):.3f}" style="background-color: rgba(255, 120, 0, {float(w):.2f})">'
             f"{html.escape(word)}</span>" for word, w in zip(words, weights)]
    return '<div style="line-height: 1.8">' + " ".join(spans) + "</div>"


class TextClassificationInterpretation(ClassificationInterpretation):
    """Interpretation of a text classifier (`text_classifier_learner`)."""

    def intrinsic_attention(self, text: str, class_id: int | None = None) -> tuple[Text, torch.Tensor]:
        """(the text as the model reads it, one weight per token in [0, 1]): how much the score of
        `class_id` (default: the predicted class) moves with each token's embedding."""
        model, data = self.learn.model, self.data
        ids = data.one_item(text)[0]
        encoder = model[0].module
        model.eval()
        with torch.enable_grad():
            emb = encoder.encoder(ids).detach().requires_grad_(True)
            encoder.reset()
            raw_outputs, outputs = encoder(emb, from_embeddings=True)
            logits = model[1]((raw_outputs, outputs, ids == data.pad_idx))
            cls = int(logits[0].argmax()) if class_id is None else int(class_id)
            logits[0, cls].backward()
        weights = emb.grad[0].abs().sum(-1)
        weights = (weights / weights.max().clamp(min=1e-12)).detach().cpu()
        encoder.reset()
        return Text(ids[0].cpu(), data.vocab.textify(ids[0].tolist())), weights

    def html_intrinsic_attention(self, text: str, class_id: int | None = None) -> str:
        item, weights = self.intrinsic_attention(text, class_id)
        return attention_html(item.text.split(" "), weights)

    def show_intrinsic_attention(self, text: str, class_id: int | None = None) -> str:
        """The heat map of `intrinsic_attention` as HTML: displayed in a notebook, and returned."""
        page = self.html_intrinsic_attention(text, class_id)
        try:
            from IPython.display import HTML, display
        except ImportError:
            return page
        display(HTML(page))
        return page

    def show_top_losses(self, k: int = 9, max_len: int = 70, largest: bool = True):
        """A table (pandas DataFrame) of the `k` texts with the largest (or smallest) losses: the text
        (first `max_len` tokens), the prediction, the actual class, the loss and the probability of
        the actual class."""
        import pandas as pd
        losses, idxs = self.top_losses(k, largest)
        ds = self.data.dl(self.ds_type).dataset
        rows = []
        for loss, i in zip(losses.tolist(), idxs.tolist()):
            words = ds.vocab.textify(ds.docs[i], sep=None)
            rows.append({"text": " ".join(words[:max_len]), "prediction": self.classes[int(self.pred_class[i])],
                         "actual": self.classes[int(self.y_true[i])], "loss": round(loss, 4),
                         "probability": round(float(self.preds[i, self.y_true[i]]), 4)})
        return pd.DataFrame(rows)
