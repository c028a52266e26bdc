/*
 * camseg: Predict for project (qupath-camseg)
 *
 * For Run > Run for project: predicts each chosen image in turn (`qcamseg predict --progress jsonl`,
 * progress shown below), then replaces the camseg objects of that image by the new ones.
 * Your own annotations are never changed. Tick "Save changes" in the Run for project dialog.
 * Stop it any time with Run > Kill running script; images already done keep their results.
 */

// Settings you may change -------------------------------------------------------------------
String MODEL_DIR = ''     // a model folder (with model.json); '': newest in <project>/camseg/models
// ---------------------------------------------------------------------------------------------

def camseg = evaluate(camsegLib()).newInstance(Dialogs, this)
String title = 'camseg: Predict for project'

camseg.guard(title) {
    def result = camseg.predictCurrentImage(MODEL_DIR, null)
    println 'Added ' + result.added + ' camseg object(s), removed ' + result.removed + ' old one(s)'
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
