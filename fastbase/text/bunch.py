"""Layer 6: the text DataBunches: `TextLMDataBunch` (a language model's streams) and
`TextClasDataBunch` (documents and their classes), with fastai v1's factories (`from_csv`,
`from_df`, `from_folder`, `from_tokens`, `from_ids`), `show_batch`, the task contract's answers
(`one_item` tokenizes a raw text, the export carries the vocabulary) and `save`, which writes the
numericalized lists as plain data (JSON and a NumPy archive) so `load_data` skips tokenizing.
"""
from __future__ import annotations

from functools import cached_property, partial

import numpy as np
import torch

from ..core import Path, ifnone, object_ref, to_device
from ..data import DataBunch, DatasetType, ItemLists, LabelLists
from ..file_checks import json_with_digest
from ..files import atomic_write
from ..losses import CrossEntropyFlat
from .data import LMLabelList, Text, TextList
from .loaders import LMDataset, LMLoader, TextClasDataset, TextClasLoader, pad_collate
from .rules import BOS
from .tokenizer import TextError, Tokenizer
from .vocab import TokenIds, Vocab

__all__ = ["TextClasDataBunch", "TextDataBunch", "TextLMDataBunch", "load_text_data"]


class TextDataBunch(DataBunch):
    """Documents as ids, with their `vocab`; the factories build a classifier's data
    (`TextClasDataBunch`) unless called on `TextLMDataBunch`."""
    _for_lm = False

    # --- factories (fastai v1's): each is a data block chain ---------------------------------
    @classmethod
    def _finish(cls, il: TextList, split, labels, test=None, **kwargs):
        lls = split(il)
        lls = lls.label_for_lm() if cls._for_lm else labels(lls)
        if test is not None:
            lls.add_test(test)
        return lls.databunch(**kwargs)

    @classmethod
    def from_df(cls, path, train_df, valid_df, test_df=None, tokenizer=None, vocab=None, classes=None,
                text_cols=1, label_cols=0, label_delim=None, mark_fields: bool | None = None, **kwargs):
        """Documents from the `text_cols` of `train_df` and `valid_df` (and `test_df`), labelled by
        `label_cols` (a classifier's data)."""
        import pandas as pd
        df = pd.concat([train_df, valid_df], ignore_index=True)
        il = TextList.from_df(df, path, cols=text_cols, vocab=vocab, tokenizer=tokenizer, mark_fields=mark_fields)
        test = None if test_df is None else \
            TextList.from_df(test_df, path, cols=text_cols, vocab=vocab, tokenizer=tokenizer, mark_fields=mark_fields)
        valid_idx = list(range(len(train_df), len(df)))
        extra = {} if label_delim is None else {"label_delim": label_delim}
        return cls._finish(il, lambda o: o.split_by_idx(valid_idx),
                           lambda o: o.label_from_df(label_cols, classes=classes, **extra), test=test, **kwargs)

    @classmethod
    def from_csv(cls, path, csv_name, valid_pct: float = 0.2, test=None, tokenizer=None, vocab=None, classes=None,
                 delimiter=None, header="infer", text_cols=1, label_cols=0, label_delim=None, seed=None, **kwargs):
        """Documents from the table `path/csv_name`, `valid_pct` of them (random) for validation."""
        import pandas as pd
        file = Path(path) / csv_name
        if not file.is_file():
            raise TextError(f"No table {file}: pass the folder as `path` and the file's name as `csv_name`.")
        df = pd.read_csv(file, delimiter=delimiter or ",", header=header)
        order = np.random.default_rng(seed).permutation(len(df)) if seed is not None else \
            np.random.permutation(len(df))
        cut = int(valid_pct * len(df))
        valid_df, train_df = df.iloc[np.sort(order[:cut])], df.iloc[np.sort(order[cut:])]
        test_df = None if test is None else pd.read_csv(Path(path) / test, delimiter=delimiter or ",", header=header)
        return cls.from_df(path, train_df, valid_df, test_df, tokenizer=tokenizer, vocab=vocab, classes=classes,
                           text_cols=text_cols, label_cols=label_cols, label_delim=label_delim, seed=seed, **kwargs)

    @classmethod
    def from_folder(cls, path, train: str = "train", valid: str = "valid", test: str | None = None, classes=None,
                    tokenizer=None, vocab=None, **kwargs):
        """`.txt` documents under `path/train` and `path/valid`, labelled by their folder's name."""
        il = TextList.from_folder(path, vocab=vocab, tokenizer=tokenizer, include=[train, valid])
        test_il = None if test is None else TextList.from_folder(Path(path) / test, vocab=vocab, tokenizer=tokenizer)
        return cls._finish(il, lambda o: o.split_by_folder(train=train, valid=valid),
                           lambda o: o.label_from_folder(classes=classes), test=test_il, **kwargs)

    @classmethod
    def from_tokens(cls, path, trn_tok, trn_lbls, val_tok, val_lbls, vocab=None, tst_tok=None, classes=None,
                    **kwargs):
        """Documents given as token lists (`include_bos` is left to you), and their labels."""
        return cls._from_lists(path, trn_tok, trn_lbls, val_tok, val_lbls, vocab, tst_tok, classes,
                               include_bos=False, **kwargs)

    @classmethod
    def from_ids(cls, path, vocab, train_ids, valid_ids, test_ids=None, train_lbls=None, valid_lbls=None,
                 classes=None, **kwargs):
        """Documents given as ids of `vocab` (a `Vocab` or its list of tokens), and their labels."""
        vocab = vocab if isinstance(vocab, Vocab) else Vocab(vocab)
        return cls._from_lists(path, train_ids, train_lbls, valid_ids, valid_lbls, vocab, test_ids, classes, **kwargs)

    @classmethod
    def _from_lists(cls, path, train, train_lbls, valid, valid_lbls, vocab, test, classes, **kwargs):
        lists = [TextList([list(o) for o in docs], path=path, vocab=vocab) for docs in (train, valid)]
        il = ItemLists(path, *lists)
        test_il = None if test is None else TextList([list(o) for o in test], path=path, vocab=vocab)
        if cls._for_lm or train_lbls is None:
            lls = il.label_for_lm() if cls._for_lm else il.label_const(0)
        else:
            lls = il.label_from_lists(list(train_lbls), list(ifnone(valid_lbls, [])), classes=classes)
        if test_il is not None:
            lls.add_test(test_il)
        return lls.databunch(path=path, **kwargs)

    # --- what the Learner asks ----------------------------------------------------------------
    @property
    def vocab(self) -> Vocab:
        if self.inference_only:
            return Vocab(self._inference_state["vocab"])
        return self.train_ds.labelled.x.vocab

    @property
    def pad_idx(self) -> int:
        return self.vocab.pad_idx

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer of the training documents (the default one for a DataBunch loaded for inference)."""
        own = None if self.inference_only else self.train_ds.labelled.x.tokenizer
        return own or Tokenizer(n_cpus=1)

    def numericalize_text(self, text: str, include_bos: bool = True) -> torch.Tensor:
        """The ids of a raw text as the training documents were made (rules, tokens, `xxbos`)."""
        tokens = self.tokenizer.process_text(text)
        return torch.tensor(self.vocab.numericalize(([BOS] if include_bos else []) + tokens), dtype=torch.long)

    def one_item(self, item):
        """A raw text (or a `Text`) as a batch of one, tokenized and numericalized with the data's vocab."""
        ids = item.data if isinstance(item, Text) else self.numericalize_text(str(item))
        x = to_device(torch.as_tensor(ids, dtype=torch.long).unsqueeze(0), self.device)
        return x, torch.zeros(1, dtype=torch.long, device=self.device)

    def input_spec(self) -> dict:
        return {"size": None, "resize_method": None, "padding_mode": None, "input": "text"}

    def serve_input(self) -> str:
        """`fastbase serve` takes a JSON `{"text": ...}` for a text model."""
        return "text"

    def export_state(self) -> dict:
        """The base export state and the vocabulary (a list of str: plain data)."""
        return {**super().export_state(), "vocab": list(self.vocab.itos)}

    def show_batch(self, rows: int = 5, ds_type: DatasetType = DatasetType.Train, max_len: int | None = 30, **kwargs):
        """A table (pandas DataFrame) of the start of `rows` documents of a batch and their targets."""
        import pandas as pd
        x, y = self.one_batch(ds_type)
        rows = min(rows, len(x))
        texts = [self._show_ids(x[i])[:None if max_len is None else max_len] for i in range(rows)]
        texts = [" ".join(t) for t in texts]
        if self._for_lm:
            return pd.DataFrame({"idx": range(rows), "text": texts})
        classes = self.classes
        targets = [classes[int(t)] if classes is not None and y.dim() == 1 else str(t.tolist()) for t in y[:rows]]
        return pd.DataFrame({"text": texts, "target": targets})

    def plot_top_losses(self, interp, k: int = 9, largest: bool = True, **kwargs):
        """The top losses as a table of texts (`TextClassificationInterpretation.show_top_losses`)."""
        from .interpret import TextClassificationInterpretation
        return TextClassificationInterpretation.show_top_losses(interp, k, largest=largest, **kwargs)

    def _show_ids(self, ids) -> list[str]:
        words = self.vocab.textify(ids.tolist(), sep=None)
        return [w for w in words if w != self.vocab.itos[self.pad_idx]]

    # --- plain-data save ------------------------------------------------------------------------
    def save(self, fname="data_save.json") -> Path:
        """Write the numericalized lists to `path/fname` (JSON: vocabulary, classes, labels) and
        `path/fname.npz` (the ids); `load_data(path, fname, bs=)` rebuilds the DataBunch without
        tokenizing again. Nothing is pickled."""
        file = self.path / fname
        sets = {"train": self.train_ds, "valid": self.valid_ds, "test": self.test_ds}
        arrays, meta = {}, {}
        for name, ds in sets.items():
            if ds is None:
                continue
            ll = ds.labelled
            arrays[f"{name}_ids"], arrays[f"{name}_offsets"] = ll.x.ids.ids, ll.x.ids.offsets
            meta[name] = {"labels": [str(o) if not isinstance(o, (list, int, float)) else o for o in ll.y.items],
                          "items": [str(o) for o in ll.x.items] if all(isinstance(o, Path) for o in ll.x.items)
                          else None}
        y = self.train_ds.labelled.y
        state = {"load_with": object_ref(load_text_data), "bunch": object_ref(type(self)),
                 "y_cls": object_ref(type(y)), "y_settings": {k: v for k, v in y.kwargs.items() if v is not None},
                 "classes": None if y.classes is None else [str(c) for c in y.classes],
                 "vocab": self.vocab.itos, "settings": self._settings, "sets": meta, "arrays": f"{file.name}.npz"}
        atomic_write(file.with_name(file.name + ".npz"), lambda tmp: _savez(tmp, arrays))
        return atomic_write(file, lambda tmp: Path(tmp).write_text(json_with_digest(state)))

    @classmethod
    def from_label_lists(cls, lls, path, bs: int = 64, val_bs=None, device=None, dl_tfms=None, seed=None,
                         **kwargs) -> TextDataBunch:
        raise NotImplementedError


def _savez(tmp, arrays):
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_text_data(state: dict, path, bs: int = 64, val_bs=None, num_workers=None, device=None, **kwargs):
    """The DataBunch that `TextDataBunch.save` described in `state` (read by `load_data`)."""
    from ..core import import_ref
    path = Path(path)
    bunch_cls, y_cls = import_ref(state["bunch"]), import_ref(state["y_cls"])
    vocab = Vocab(state["vocab"])
    arrays_file = path / state["arrays"]
    if not arrays_file.is_file():
        raise TextError(f"{arrays_file} is missing: `save` writes it beside {state['arrays'][:-4]}.")
    with np.load(arrays_file, allow_pickle=False) as arrays:
        lists = {}
        for name, meta in state["sets"].items():
            ids = TokenIds(arrays[f"{name}_ids"], arrays[f"{name}_offsets"])
            items = [Path(o) for o in meta["items"]] if meta["items"] is not None else list(range(len(ids)))
            x = TextList(items, path=path, vocab=vocab)
            x.ids = ids
            lists[name] = (x, y_cls(meta["labels"], classes=state["classes"], **state["y_settings"]))
    from ..data import LabelList
    train, valid = (LabelList(*lists[k]) for k in ("train", "valid"))
    lls = LabelLists(path, train, valid)
    if "test" in lists:
        lls.test = LabelList(lists["test"][0], lists["test"][1].process(train.y))
    settings = {**state.get("settings", {}), **kwargs}
    return bunch_cls.from_label_lists(lls, path=path, bs=bs, val_bs=val_bs, device=device, **settings)


class TextLMDataBunch(TextDataBunch):
    """A language model's data: each batch (bs, ~bptt) windows of `bs` streams of the corpus, the
    target one token ahead; the vocabulary is the model's output classes."""
    _for_lm = True

    @classmethod
    def from_label_lists(cls, lls, path, bs: int = 64, val_bs=None, device=None, dl_tfms=None, seed=None,
                         bptt: int = 70, backwards: bool = False, random_bptt: bool | None = None,
                         **kwargs) -> TextLMDataBunch:
        if kwargs:
            raise TextError(f"Unknown argument(s) {sorted(kwargs)} for a TextLMDataBunch.")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        val_bs = ifnone(val_bs, bs)
        sets = [LMDataset(ll, b, bptt, backwards) for ll, b in ((lls.train, bs), (lls.valid, val_bs))]
        if sets[0].stream_len < 2:
            raise TextError(f"The training documents hold {sets[0].n_tokens} tokens, too few for {bs} streams: "
                            "use a smaller `bs` or more text.")
        train_dl, valid_dl = LMLoader(sets[0], shuffle=True, generator=gen, random_bptt=random_bptt), LMLoader(sets[1])
        fix_dl = LMLoader(LMDataset(lls.train, val_bs, bptt, backwards))
        test_dl = None if lls.test is None else LMLoader(LMDataset(lls.test, val_bs, bptt, backwards))
        data = cls(train_dl, valid_dl, fix_dl, test_dl, device=device, dl_tfms=dl_tfms, path=path)
        data.label_lists, data.bptt, data.loss_func = lls, bptt, CrossEntropyFlat(axis=-1)
        data._settings = {"bptt": bptt, "backwards": backwards, "random_bptt": random_bptt}
        return data

    @property
    def classes(self):
        return None

    @property
    def c(self) -> int:
        return len(self.vocab)


class TextClasDataBunch(TextDataBunch):
    """A classifier's data: documents padded (first, with `xxpad`) to the longest of their batch;
    training batches of similar lengths (`SortishSampler`), validation longest first."""

    @classmethod
    def from_label_lists(cls, lls, path, bs: int = 64, val_bs=None, device=None, dl_tfms=None, seed=None,
                         pad_first: bool = True, backwards: bool = False, bptt: int | None = None,
                         **kwargs) -> TextClasDataBunch:
        if kwargs:
            raise TextError(f"Unknown argument(s) {sorted(kwargs)} for a TextClasDataBunch.")
        if lls.train.y.classes is None and not lls.train.y.multi_label:
            raise TextError("A classifier's documents need labels (label_from_df, label_from_folder...); for a "
                            "language model use label_for_lm() or TextLMDataBunch.")
        if isinstance(lls.train.y, LMLabelList):
            raise TextError("These documents are labelled for a language model: build a TextLMDataBunch.")
        vocab = lls.train.x.vocab
        collate = partial(pad_collate, pad_idx=vocab.pad_idx, pad_first=pad_first, backwards=backwards)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        val_bs = ifnone(val_bs, bs)
        for name in ("valid", "test"):  # longest first, so get_preds' rows follow the data set's order
            ll = getattr(lls, name)
            if ll is not None and len(ll):
                order = np.argsort(-ll.x.ids.lengths, kind="stable").tolist()
                setattr(lls, name, type(ll)(ll.x[order], ll.y[order]))
        common = {"collate_fn": collate, "pin_memory": torch.device(ifnone(device, "cpu")).type == "cuda"}
        train_dl = TextClasLoader(TextClasDataset(lls.train), bs, shuffle=True, generator=gen, **common)
        valid_dl = TextClasLoader(TextClasDataset(lls.valid), val_bs, **common)
        fix_dl = TextClasLoader(TextClasDataset(lls.train), val_bs, **common)
        test_dl = None if lls.test is None else TextClasLoader(TextClasDataset(lls.test), val_bs, **common)
        data = cls(train_dl, valid_dl, fix_dl, test_dl, device=device, dl_tfms=dl_tfms, path=path)
        data.label_lists, data.loss_func = lls, lls.train.y.loss_func
        data._settings = {"pad_first": pad_first, "backwards": backwards}
        return data
