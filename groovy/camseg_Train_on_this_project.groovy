/*
 * camseg: Train on this project (qupath-camseg)
 *
 * 1. exports your annotations (as "camseg Export annotations for training" does),
 * 2. runs `qcamseg train` on this project, showing its progress below,
 * 3. saves the model in <project>/camseg/models/model-<date>-<time>/ and remembers it.
 * FROM_LAST_MODEL = true continues from the newest model of the project instead of starting over
 * (qcamseg train --init: a few epochs, after you corrected its predictions).
 * Training on a CPU takes long; stop it any time with Run > Kill running script.
 * Run it once (not with "Run for project").
 */

// Settings you may change -------------------------------------------------------------------
Integer EPOCHS = null     // null: qcamseg's default number of epochs
boolean FROM_LAST_MODEL = false  // true: fine-tune the newest model in <project>/camseg/models
// ---------------------------------------------------------------------------------------------

def camseg = evaluate(camsegLib()).newInstance(Dialogs, this)
String title = 'camseg: Train'

camseg.guard(title) {
    File model = camseg.train(EPOCHS, FROM_LAST_MODEL)
    String message = 'Model saved to\n' + model + '\n\nNext: open an image and run "camseg Predict current image".'
    println message
    Dialogs.showMessageDialog(title, message)
}

/** The shared helper camseg_lib.groovy: next to this script, else in the Shared or Project scripts folder. */
File camsegLib() {
    List<File> folders = []
    def self = binding.hasVariable('qupath.script.file') ? binding.getVariable('qupath.script.file') : null
    if (self != null)
        folders << new File(self.toString()).parentFile
    try {
        String shared = qupath.lib.gui.prefs.PathPrefs.scriptsPathProperty().get()
        if (shared)
            folders << new File(shared)
    } catch (Exception ignored) {
        // No Shared scripts folder set.
    }
    def project = getProject()
    if (project != null)
        folders << new File(Projects.getBaseDirectory(project), 'scripts')
    File lib = folders.collect { new File(it, 'camseg_lib.groovy') }.find { it.isFile() }
    if (lib == null)
        throw new FileNotFoundException('camseg_lib.groovy not found (looked in ' + folders.join(', ') +
                '). Install all camseg scripts together with: qcamseg install-scripts')
    return lib
}
