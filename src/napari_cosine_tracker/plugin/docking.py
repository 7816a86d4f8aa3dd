"""One dock for the plugin's panels: each new panel joins the others as a tab.

Docked one above the other, the correction panel squeezed the tracker into a thin strip
(its sections 3-6 reachable only by dragging the splitter). napari docks every plugin widget
in its own QDockWidget; when one of ours is shown in a dock area where another of ours
already is, :func:`join_as_tab` puts it in the same place as a tab (Qt's
``QMainWindow.tabifyDockWidget``, public Qt API), raises it, and names the tabs by the
panels alone (without the plugin's name, which left the tabs' text cut off). The user can
still drag a tab out to see two panels side by side.
"""

from __future__ import annotations

from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget

__all__ = ["join_as_tab", "PANEL_MARKER"]

#: attribute set on this plugin's panels (the tracker, correction, link and plots widgets)
PANEL_MARKER = "_cosine_tracker_panel"


def _dock_of(widget) -> QDockWidget | None:
    w = widget.parentWidget() if widget is not None else None
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parentWidget()
    return w


#: napari titles a plugin's dock "<widget> (<plugin>)"; as tabs side by side the plugin's
#: name only pushes the widget's own name out of view ("Segment and track cells (napari-c…")
PLUGIN_SUFFIX = " (napari-cosine-tracker)"


def _short_title(dock: QDockWidget) -> None:
    title = dock.windowTitle()
    if title.endswith(PLUGIN_SUFFIX):
        dock.setWindowTitle(title[: -len(PLUGIN_SUFFIX)])


def join_as_tab(widget) -> bool:
    """Tabify ``widget``'s dock with another of this plugin's docks in the same area; True if
    it joined one. Call from the panel's ``showEvent`` (its dock exists by then)."""
    dock = _dock_of(widget)
    if dock is None or getattr(dock, "_cosine_tabbed", False):
        return False
    main = dock.parentWidget()
    while main is not None and not isinstance(main, QMainWindow):
        main = main.parentWidget()
    if main is None or dock.isFloating():
        return False
    area = main.dockWidgetArea(dock)
    for other in main.findChildren(QDockWidget):
        if other is dock or other.isFloating() or not other.isVisible():
            continue
        inner = other.widget()  # napari may wrap the panel (e.g. in a scroll area)
        ours = inner is not None and (getattr(inner, PANEL_MARKER, False) or any(
            getattr(c, PANEL_MARKER, False) for c in inner.findChildren(QWidget)))
        if ours and main.dockWidgetArea(other) == area:
            main.tabifyDockWidget(other, dock)
            dock._cosine_tabbed = True
            for d in (other, dock):
                _short_title(d)
            dock.show()
            dock.raise_()
            return True
    return False
