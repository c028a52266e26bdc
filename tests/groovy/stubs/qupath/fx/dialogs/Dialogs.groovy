package qupath.fx.dialogs

import testdoubles.World

/**
 * TEST DOUBLE (for tests/test_groovy.py, never shipped): stands in for QuPath's qupath.fx.dialogs.Dialogs (QuPath 0.5+).
 * Records every dialog; answers come from the scenario's dialogAnswers, in order.
 * Only the methods both QuPath 0.4's and 0.5+'s Dialogs have.
 */
class Dialogs {
    static boolean showConfirmDialog(String title, String text) {
        World.recordDialog("confirm", title, text)
        return World.nextAnswer("confirm", title) as boolean
    }

    static boolean showMessageDialog(String title, String message) {
        World.recordDialog("message", title, message)
        return true
    }

    static boolean showYesNoDialog(String title, String text) {
        World.recordDialog("yesno", title, text)
        return World.nextAnswer("yesno", title) as boolean
    }

    static String showInputDialog(String title, String message, String initialInput) {
        World.recordDialog("input", title, message + "\n[initial: " + initialInput + "]")
        return World.nextAnswer("input", title) as String
    }

    static Double showInputDialog(String title, String message, Double initialInput) {
        World.recordDialog("inputNumber", title, message)
        return World.nextAnswer("inputNumber", title) as Double
    }

    static <T> T showChoiceDialog(String title, String message, Collection<T> choices, T defaultChoice) {
        World.recordDialog("choice", title, message)
        return (T) World.nextAnswer("choice", title)
    }

    static void showErrorMessage(String title, String message) { World.recordDialog("error", title, message) }

    static void showErrorMessage(String title, Throwable e) { World.recordDialog("error", title, e.getLocalizedMessage()) }

    static void showPlainMessage(String title, String message) { World.recordDialog("plain", title, message) }

    static void showErrorNotification(String title, String message) { World.recordDialog("errorNotification", title, message) }

    static void showWarningNotification(String title, String message) { World.recordDialog("warningNotification", title, message) }

    static void showInfoNotification(String title, String message) { World.recordDialog("infoNotification", title, message) }

    static void showPlainNotification(String title, String message) { World.recordDialog("plainNotification", title, message) }
}
