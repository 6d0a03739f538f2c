"""Turn predictions, drift states and errors into what the page shows (plain strings and HTML, no gradio)."""

from __future__ import annotations

from html import escape

from backend import BackendError, DriftState, Prediction

from imagenette_drift.monitor_contract import MonitorStatus
from imagenette_drift.serve_contract import DriftExplanation

BADGE_CSS = """
#drift-badge .badge { padding: 0.6em 0.9em; border-radius: 0.5em; font-weight: 600; }
#drift-badge .badge small { display: block; font-weight: 400; margin-top: 0.2em; }
#drift-badge .ok { background: #dcfce7; color: #14532d; }
#drift-badge .drifting { background: #fee2e2; color: #7f1d1d; }
#drift-badge .warming_up, #drift-badge .off, #drift-badge .unknown { background: #f3f4f6; color: #374151; }
#drift-badge .explanation { margin-top: 0.4em; font-weight: 400; font-size: 0.9em; }
#monitor-table table { border-collapse: collapse; font-size: 0.9em; }
#monitor-table th, #monitor-table td { padding: 0.25em 0.6em; border-bottom: 1px solid #e5e7eb; text-align: right; }
#monitor-table tr.drifting td { background: #fee2e2; color: #7f1d1d; font-weight: 600; }
#monitor-table .alert { padding: 0.4em 0.8em; border-radius: 0.4em; display: inline-block; margin-bottom: 0.5em; }
#monitor-table .alert.active { background: #fee2e2; color: #7f1d1d; }
#monitor-table .alert.clear { background: #dcfce7; color: #14532d; }
"""


def label_value(prediction: Prediction) -> dict[str, float]:
    """The `gr.Label` value: class name -> probability."""
    return dict(prediction.top_k)


def latency_text(prediction: Prediction) -> str:
    """One line: the round trip, and the model's own time when the server reports it."""
    text = f"Latency: {prediction.round_trip_ms:.0f} ms round trip"
    if prediction.model_ms is not None:
        text += f" ({prediction.model_ms:.1f} ms in the model)"
    return text


def familiarity_text(prediction: Prediction) -> str:
    """One line: whether the image looks like the training data, with its k-NN distance and energy."""
    familiarity = prediction.familiarity
    if familiarity is None:
        return "Familiarity: not available (the checkpoint has no familiarity bank)"
    scores = f"k-NN distance {familiarity.knn_distance:.3f}"
    if familiarity.energy is not None:
        scores += f", energy {familiarity.energy:.2f}"
    if familiarity.unfamiliar:
        return f"**Unfamiliar image**: unlike the images the model was checked on ({scores})"
    return f"Familiar image ({scores})"


def drift_state_name(state: DriftState) -> str:
    """One of ok, drifting, warming_up, off: the badge's colour and its `data-state`."""
    if not state.enabled:
        return "off"
    if not state.window_filled:
        return "warming_up"
    return "drifting" if state.drifting else "ok"


def _badge(state_name: str, headline: str, detail: str, extra: str = "") -> str:
    return (
        f'<div class="badge {state_name}" data-state="{state_name}">{escape(headline)}'
        f"<small>{escape(detail)}</small>{extra}</div>"
    )


def explanation_text(explanation: DriftExplanation) -> list[str]:
    """Plain lines of a drifting window's explanation: what it looks like, classes moved, BBSE's top shares."""
    if isinstance(explanation.looks_like, list):
        looks = ", ".join(f"{m.corruption} ({m.similarity:.2f})" for m in explanation.signatures)
    else:
        looks = explanation.looks_like
        if explanation.signatures:
            best = explanation.signatures[0]
            looks += f" (closest: {best.corruption}, {best.similarity:.2f})"
    moved = ", ".join(explanation.moved_classes) or "none"
    shifted = sorted(
        (c for c in explanation.classes if c.bbse_share is not None),
        key=lambda c: -abs(c.bbse_share - c.reference_share),
    )[:3]
    bbse = ", ".join(f"{c.label} {c.reference_share:.0%} -> {c.bbse_share:.0%}" for c in shifted)
    return [f"Looks like: {looks}", f"Classes moved: {moved}", f"Estimated true shares (BBSE): {bbse or '-'}"]


def _explanation_html(state: DriftState) -> str:
    if state.explanation is None:
        return ""
    lines = "".join(f"<li>{escape(line)}</li>" for line in explanation_text(state.explanation))
    return f'<ul class="explanation">{lines}</ul>'


def drift_badge(state: DriftState) -> str:
    """HTML badge: OK / DRIFTING with the statistic and threshold, or why there is no verdict yet; with the
    label-free accuracy estimate of the latest images when the server gives one."""
    name = drift_state_name(state)
    if name == "off":
        return _badge(name, "Drift monitoring off", state.reason or "the server has no drift reference")
    if name == "warming_up":
        return _badge(
            name,
            "Drift: collecting images",
            f"{state.images_seen} of {state.window_size} images needed for the first window"
            + _accuracy_text(state),
        )
    comparison = (
        f"statistic {state.statistic:.4g} {'>' if state.drifting else '<='} threshold {state.threshold:.4g}"
    )
    detail = f"{comparison}; {state.images_seen} images seen{_accuracy_text(state)}"
    if state.drifting:
        since = "" if state.drifting_since is None else f" since image {state.drifting_since}"
        return _badge(name, f"DRIFTING{since}", detail, _explanation_html(state))
    return _badge(name, "Drift: OK", detail)


def _accuracy_text(state: DriftState) -> str:
    """'; estimated accuracy 81% (held-out 88%)[: HARM ...]' or '' without an estimate."""
    estimate = (state.accuracy or {}).get(state.estimate_method or "atc_mc")
    if estimate is None or state.heldout_accuracy is None:
        return ""
    harm = ": HARM, accuracy is estimated to have dropped" if state.harm else ""
    return f"; estimated accuracy {estimate.estimate:.0%} (held-out {state.heldout_accuracy:.0%}){harm}"


def drift_badge_pending() -> str:
    """Grey badge before the first status arrives."""
    return _badge("unknown", "Drift status not fetched yet", "it loads with the page and after each image")


def drift_unavailable_badge(error: BackendError) -> str:
    """Grey badge when the drift status could not be fetched."""
    return _badge("unknown", "Drift status unavailable", str(error))


def error_message(error: BackendError) -> str:
    """Markdown for the message box: the title in bold, then what to do."""
    return f"**{error.title}.** {error.detail}"


# (JSON key, column header, format) of the monitoring tab's table, one row per window.
MONITOR_COLUMNS = (
    ("window", "window", "d"),
    ("window_end", "end (UTC)", "time"),
    ("n", "records", "d"),
    ("n_replicas", "replicas", "d"),
    ("mmd_p_value", "MMD p", ".3g"),
    ("inputs_p_value", "inputs KS p", ".3g"),
    ("label_shift_p_value", "label-shift p", ".3g"),
    ("drift", "drift", "flag"),
    ("n_labelled", "labelled", "d"),
    ("realized_accuracy", "realized acc", ".3f"),
    ("estimated_accuracy", "estimated acc", ".3f"),
    ("top_signature", "looks like", "s"),
    ("top_moved_class", "top moved class", "s"),
    ("bbse_max_change", "BBSE max change", ".3f"),
)


def _cell(value: object, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "flag":
        return "DRIFT" if value else "ok"
    if kind == "time":
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return format(value, kind)


def monitor_table(state: MonitorStatus) -> str:
    """HTML: the alert line, then one table row per window; drifting rows carry class `drifting`."""
    alert = "active" if state.alert.active else "clear"
    headline = "ALERT: the fleet's traffic drifts" if state.alert.active else "No drift alert"
    parts = [
        f'<div class="alert {alert}" data-alert="{alert}">{escape(headline)}</div>',
        f"<p>{len(state.windows)} windows of {escape(state.window)} from {escape(state.log)}, "
        f"updated {state.updated_at:%Y-%m-%d %H:%M:%S} UTC.</p>",
        "<table><thead><tr>",
        *(f"<th>{escape(title)}</th>" for _, title, _ in MONITOR_COLUMNS),
        "</tr></thead><tbody>",
    ]
    for window in state.windows:
        row = window.model_dump()
        css = "drifting" if row["drift"] else "clean"
        parts.append(f'<tr class="{css}" data-window="{int(row["window"])}">')
        parts += [f"<td>{escape(_cell(row.get(key), kind))}</td>" for key, _, kind in MONITOR_COLUMNS]
        parts.append("</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def monitor_unavailable(error: BackendError) -> str:
    """What the monitoring tab shows when `/status` could not be fetched."""
    return f'<div class="alert unknown" data-alert="unknown">Monitor status unavailable: {escape(str(error))}</div>'
