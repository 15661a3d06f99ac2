"""A small PySide6 desktop app: open or drop a photo, see the top-3 labels, the abstain flag, latency and backend.

    pip install dermedge PySide6-Essentials
    python examples/desktop_qt/app.py [--photo P] [--bundle B] [--screenshot OUT.png]

Inference runs on a worker thread, so the window never freezes. ``--screenshot`` saves
the window once the first result is shown and quits (used by the test, offscreen). Public API only.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QApplication, QFileDialog, QLabel, QMainWindow, QPushButton, QVBoxLayout, QWidget

import dermedge


class Classifier(QObject):
    """Runs ``Model.classify`` on a Python worker thread and reports back through Qt signals (queued
    to the UI thread). A plain Python thread is used rather than QThreadPool: OpenVINO's CPU plugin
    crashed in Qt's pool threads in our tests."""

    done = Signal(object, float)
    failed = Signal(str)

    def __init__(self, model: dermedge.Model) -> None:
        super().__init__()
        self.model = model

    def submit(self, path: str) -> None:
        threading.Thread(target=self._run, args=(path,), daemon=True).start()

    def _run(self, path: str) -> None:
        t0 = time.perf_counter()
        try:
            pred = self.model.classify(path, top_k=3)[0]
        except dermedge.DermedgeError as exc:
            self.failed.emit(str(exc))
            return
        self.done.emit(pred, (time.perf_counter() - t0) * 1000)


class Window(QMainWindow):
    def __init__(self, model: dermedge.Model, screenshot: str | None = None) -> None:
        super().__init__()
        self.model, self.screenshot = model, screenshot
        self.setWindowTitle("dermedge - research use only")
        self.setAcceptDrops(True)
        self.preview = QLabel("Open or drop a photo")
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumSize(320, 240)
        self.result = QLabel("")
        self.result.setObjectName("result")
        self.status = QLabel(
            f"model {model.manifest.name} {model.manifest.version} | backend {model.backend_name}/{model.precision}"
        )
        button = QPushButton("Open photo...")
        button.clicked.connect(self.choose)
        layout = QVBoxLayout()
        for w in (button, self.preview, self.result, self.status):
            layout.addWidget(w)
        central = QWidget()
        central.setLayout(layout)
        self.setCentralWidget(central)
        self.classifier = Classifier(model)
        self.classifier.done.connect(self.show_result)
        self.classifier.failed.connect(self.show_error)

    def choose(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open photo", "", "Images (*.jpg *.jpeg *.png *.bmp *.tif *.tiff *.webp)"
        )
        if path:
            self.open(path)

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt naming
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        urls = event.mimeData().urls()
        if urls:
            self.open(urls[0].toLocalFile())

    def open(self, path: str) -> None:
        try:
            rgb = dermedge.read_image(path, target_short_side=240)
            h, w = rgb.shape[:2]
            data = rgb.tobytes()  # QImage does not copy: keep the buffer alive, then detach with copy()
            image = QImage(data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
            self.preview.setPixmap(QPixmap.fromImage(image).scaled(320, 240, Qt.AspectRatioMode.KeepAspectRatio))
        except dermedge.InputError as exc:
            self.show_error(str(exc))
            return
        self.result.setText("classifying...")
        self.classifier.submit(path)

    def show_result(self, pred: dermedge.Prediction, ms: float) -> None:
        lines = [f"<b>{label}</b>: {p:.1%}" for label, p in pred.top_k]
        if pred.abstain:
            lines.append("<span style='color:#a60'>Abstain: this photo is unlike the photos the model knows.</span>")
        self.result.setText("<br>".join(lines))
        self.status.setText(
            f"{ms:.0f} ms | backend {self.model.backend_name}/{self.model.precision} | "
            f"model {self.model.manifest.name} | research use only"
        )
        self._maybe_screenshot()

    def show_error(self, message: str) -> None:
        self.result.setText(f"<span style='color:#b00'>{message}</span>")
        self._maybe_screenshot()

    def _maybe_screenshot(self) -> None:
        if self.screenshot:
            QTimer.singleShot(50, lambda: (self.grab().save(self.screenshot), QApplication.instance().quit()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo")
    p.add_argument("--bundle")
    p.add_argument("--backend", default="auto")
    p.add_argument("--screenshot", help="save the window after the first result and quit")
    args = p.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    with dermedge.load_model(args.bundle, backend=args.backend) as model:
        win = Window(model, args.screenshot)
        win.show()
        if args.photo:
            QTimer.singleShot(0, lambda: win.open(str(Path(args.photo))))
        if args.screenshot:
            QTimer.singleShot(60_000, app.quit)  # never hang a test
        code = app.exec()
        print(win.result.text())
        return int(code)


if __name__ == "__main__":
    sys.exit(main())
