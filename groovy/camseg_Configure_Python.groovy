/*
 * camseg: Configure Python (qupath-camseg)
 *
 * Run this once. It asks for the Python that has qupath-camseg installed, remembers it in
 * QuPath's preferences (so it survives restarts), then runs `qcamseg doctor` and shows the result.
 *
 * Give an absolute path: QuPath started from the desktop does not see your terminal's PATH.
 * To find it, run in the terminal where qcamseg works:
 *     python -c "import sys; print(sys.executable)"
 * (e.g. C:\Users\me\miniforge3\envs\camseg\python.exe or /home/me/miniforge3/envs/camseg/bin/python)
 * Instead of this script you may set the environment variable QCAMSEG_PYTHON.
 */

def camseg = evaluate(camsegLib()).newInstance(Dialogs, this)
String title = 'camseg: Configure Python'

camseg.guard(title) {
    String current = camseg.preferenceValue(camseg.PREF_PYTHON) ?: System.getenv(camseg.ENV_PYTHON) ?: ''
    String answer = Dialogs.showInputDialog(title,
            'Absolute path of the Python executable that has qupath-camseg installed\n' +
            '(in that environment run: python -c "import sys; print(sys.executable)")', current)
    if (answer == null || !answer.trim()) {
        println 'Cancelled; Python setting unchanged (' + (current ?: 'not set') + ')'
        return
    }
    File python = camseg.checkPython(answer.trim().replaceAll(/^["']|["']$/, ''))
    camseg.setPreference(camseg.PREF_PYTHON, python.absolutePath)
    println 'camseg will use ' + python.absolutePath
    def result = camseg.run(['doctor'], 'qcamseg doctor')
    Dialogs.showMessageDialog(title, 'camseg will use\n' + python.absolutePath + '\n\nqcamseg doctor:\n' +
            result.tail.join('\n'))
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
