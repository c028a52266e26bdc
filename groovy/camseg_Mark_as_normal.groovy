/*
 * camseg: Mark as normal (qupath-camseg)
 *
 * Tells the model that the selected region is tumour-free: it gets the class "Normal", which
 * trains as background (also on slides without any tumour outline). Use it for a false positive:
 * draw an outline over it (or click the camseg outline or Review box) and run this script.
 * camseg objects become plain annotations of your own; your own annotations just change class.
 */

def camseg = evaluate(camsegLib()).newInstance(Dialogs, this)
String title = 'camseg: Mark as normal'

camseg.guard(title) {
    def result = camseg.markAsNormal(getSelectedObjects())
    String message = 'Marked ' + result.marked + ' region(s) as Normal'
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
