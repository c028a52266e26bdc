/*
 * camseg: Predict current image (qupath-camseg)
 *
 * Runs the camseg model on the image open now and shows the result as objects whose names start
 * with "camseg". Select one or more of your annotations first to predict only inside them.
 * Objects from an earlier camseg run on this image are replaced; your own annotations are never
 * changed. Stop it any time with Run > Kill running script.
 * For many images use "camseg Predict for project" with Run > Run for project.
 */

// Settings you may change -------------------------------------------------------------------
String MODEL_DIR = ''     // a model folder (with model.json); '': newest in <project>/camseg/models
// ---------------------------------------------------------------------------------------------

def camseg = evaluate(camsegLib()).newInstance(Dialogs, this)
String title = 'camseg: Predict'

camseg.guard(title) {
    def selection = (getSelectedObjects() ?: []).findAll { it.isAnnotation() && !camseg.hasOurMarker(it) }
    def result = camseg.predictCurrentImage(MODEL_DIR, selection)
    String message = 'Added ' + result.added + ' camseg object(s)' +
            (result.removed ? ' (replacing ' + result.removed + ' from the previous run)' : '') +
            '\nModel: ' + result.model.name
    println message
    Dialogs.showInfoNotification(title, message)
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
